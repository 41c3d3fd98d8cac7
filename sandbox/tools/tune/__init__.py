"""``sandbox tune-steps``: a sampler's time grid tuned to a model at a fixed NFE.

:mod:`~sandbox.tools.tune.space` parametrises the grids, :mod:`~sandbox.tools.tune.search` searches them,
:mod:`~sandbox.tools.tune.grid` tunes one sampler's grid and keeps it only where it wins on held-out noise,
and :mod:`~sandbox.tools.tune.command` writes and reports it.
"""

from sandbox.tools.tune.command import save_grid, tune_command
from sandbox.tools.tune.grid import Tuned, tune_grid

__all__ = ["Tuned", "save_grid", "tune_command", "tune_grid"]
