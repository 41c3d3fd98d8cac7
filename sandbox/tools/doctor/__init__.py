"""``sandbox doctor``: are the samplers right, and which one for this model.

Without a run it checks every registered sampler x grid x schedule x target
against the exact oracle denoiser of a Gaussian mixture
(:mod:`sandbox.tools.doctor.oracle`, printed by :mod:`sandbox.tools.doctor.report`);
given a run folder or an analytic recipe, it ranks every sampler x grid on that
model at an NFE budget against a many-step reference
(:mod:`sandbox.tools.doctor.ranking`). :func:`doctor_command` takes both modes'
arguments and picks the mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from rich.console import Console

from sandbox.engine.solve import BATCH
from sandbox.tools.doctor.oracle import SAMPLES
from sandbox.tools.doctor.ranking import ranking_command
from sandbox.tools.doctor.report import oracle_command

__all__ = ["doctor_command"]


def doctor_command(
    run_or_recipe: Optional[str] = None,
    *,
    nfe: int = 10,
    reference: Optional[str] = None,
    samples: Optional[int] = None,
    json_path: Optional[str] = None,
    samplers: Optional[Sequence[str]] = None,
    schedules: Optional[Sequence[str]] = None,
    targets: Optional[Sequence[str]] = None,
    grids: Optional[Sequence[str]] = None,
    plugins: Sequence[str] = (),
    console: Optional[Console] = None,
) -> int:
    """``sandbox doctor [RUN_DIR_OR_RECIPE]``: the ranking on that run (``nfe``, ``reference``, ``samples``,
    ``samplers``, ``grids``), else the oracle matrix (``samples``, ``json_path``, ``samplers``, ``schedules``,
    ``targets``, ``grids``, ``plugins``); returns the exit status. With a run folder, ``plugins`` are the local
    plugins its recipe may load (``--plugin``): a run folder is data, not code."""
    if run_or_recipe is not None:
        return ranking_command(
            run_or_recipe,
            [],
            nfe=nfe,
            samplers=list(samplers) if samplers is not None else None,
            grids=list(grids) if grids is not None else None,
            reference_sampler=reference,
            batch=samples or BATCH,
            console=console,
            trusted=tuple(plugins),
        )
    return oracle_command(
        samples=samples or SAMPLES,
        json_path=json_path,
        samplers=samplers,
        schedules=schedules,
        targets=targets,
        grids=grids,
        plugins=plugins,
        console=console,
    )
