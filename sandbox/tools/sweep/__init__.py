"""``sandbox sweep`` (being split into one module per job)."""

from sandbox.tools.sweep.plan import *  # noqa: F403
from sandbox.tools.sweep.plan import SWEEP_FILE, _SweepStop  # noqa: F401
