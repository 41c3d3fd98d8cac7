"""``sandbox doctor``: are the samplers right, and which one for this model.

Without a run it checks every registered sampler x grid x schedule x target
against the exact oracle denoiser of a Gaussian mixture
(:mod:`sandbox.tools.doctor.oracle`, printed by :mod:`sandbox.tools.doctor.report`);
given a run folder or an analytic recipe, it ranks every sampler x grid on that
model at an NFE budget against a many-step reference
(:mod:`sandbox.tools.doctor.ranking`). :func:`doctor_command` takes both modes'
arguments, picks the mode, and refuses what does not apply to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from rich.console import Console

from sandbox.engine.solve import BATCH
from sandbox.errors import SandboxError
from sandbox.tools.doctor.oracle import SAMPLES
from sandbox.tools.doctor.ranking import NFE, ranking_command
from sandbox.tools.doctor.report import oracle_command

__all__ = ["OptionError", "doctor_command"]


class OptionError(SandboxError):
    """An option given to the mode it does not apply to."""

    exit_code = 2


# Why an option of one mode does not apply to the other (the message of the exit status 2 that refuses it).
ORACLE_ONLY = {
    "--schedule": "a run's network was trained on its own schedule (an analytic recipe: give schedule.name=NAME)",
    "--target": "a run's network predicts its own target (an analytic recipe: give train.target=NAME)",
}
RANKING_ONLY = {
    "--nfe": "the oracle matrix runs at its own NFE budgets",
    "--reference": "the oracle matrix is measured against the exact mixture, not a many-step reference",
    "key=value overrides": "the oracle matrix has no recipe to override",
}


def doctor_command(
    run_or_recipe: Optional[str] = None,
    overrides: Sequence[str] = (),
    *,
    nfe: Optional[int] = None,
    reference: Optional[str] = None,
    samples: Optional[int] = None,
    json_path: Optional[str] = None,
    samplers: Optional[Sequence[str]] = None,
    schedules: Optional[Sequence[str]] = None,
    targets: Optional[Sequence[str]] = None,
    grids: Optional[Sequence[str]] = None,
    threads: Optional[int] = None,
    plugins: Sequence[str] = (),
    console: Optional[Console] = None,
) -> int:
    """``sandbox doctor [RUN_DIR_OR_RECIPE] [key=value ...]``; returns the exit status.

    Both modes take ``samples``, ``json_path``, ``samplers``, ``grids`` and ``plugins``. Given a run folder or
    recipe, the ranking on it also takes ``overrides`` (a run folder: sampling keys only, as ``sandbox sample``),
    ``nfe`` and ``reference``, ``threads`` is ``run.threads``, and ``plugins`` are the local plugins its recipe may
    load (``--plugin``: a run folder is data, not code). Without one, the oracle matrix also takes ``schedules``
    and ``targets``, and runs on ``threads`` threads (one unless given). An option of the other mode is refused
    (:class:`OptionError`, exit status 2) naming it."""
    given = {
        "--schedule": schedules is not None,
        "--target": targets is not None,
        "--nfe": nfe is not None,
        "--reference": reference is not None,
        "key=value overrides": bool(overrides),
        "--threads": threads is not None,
    }
    if run_or_recipe is not None:
        _refuse(given, ORACLE_ONLY, "sandbox doctor without a run")
        return ranking_command(
            run_or_recipe,
            [*overrides, *([f"run.threads={threads}"] if threads is not None else [])],
            nfe=nfe or NFE,
            samplers=list(samplers) if samplers is not None else None,
            grids=list(grids) if grids is not None else None,
            reference_sampler=reference,
            batch=samples or BATCH,
            json_path=json_path,
            console=console,
            trusted=tuple(plugins),
        )
    _refuse(given, RANKING_ONLY, "sandbox doctor RUN_DIR_OR_RECIPE")
    return oracle_command(
        samples=samples or SAMPLES,
        json_path=json_path,
        samplers=samplers,
        schedules=schedules,
        targets=targets,
        grids=grids,
        plugins=plugins,
        console=console,
        threads=threads or 1,  # 0 (automatic) or unset: one thread, the matrix being thousands of tiny operations
    )


def _refuse(given: dict[str, bool], reasons: dict[str, str], where: str) -> None:
    for option, why in reasons.items():
        if given[option]:
            raise OptionError(f"{option} applies to {where} only: {why}")
