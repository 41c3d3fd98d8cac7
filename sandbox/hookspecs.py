"""The hooks a plugin implements: one per kind, each handed a :class:`sandbox.protocols.Register`.

What each kind's ``build`` receives and returns is in :mod:`sandbox.protocols`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from sandbox.protocols import Register, RegisterExporter, RunInfo

hookspec = pluggy.HookspecMarker("sandbox")


@hookspec
def register_datasets(register: Register) -> None:
    """Register datasets: ``build(params) -> DataSplits``."""


@hookspec
def register_schedules(register: Register) -> None:
    """Register noise schedules: ``build(params) -> Schedule``."""


@hookspec
def register_denoisers(register: Register) -> None:
    """Register denoisers: ``build(params, shape) -> DenoiserNetwork | AnalyticDenoiser``."""


@hookspec
def register_samplers(register: Register) -> None:
    """Register samplers: ``build(params) -> Sampler``, called with unit-variance noise, not x_T."""


@hookspec
def register_guidance(register: Register) -> None:
    """Register guidance methods, which the recipe's ``guidance:`` section names: ``build(params) -> Guidance``."""


@hookspec
def register_grids(register: Register) -> None:
    """Register time grids, which a sampler section names (``sampler.grid``): ``build(params) -> Grid``."""


@hookspec
def register_launchers(register: Register) -> None:
    """Register sweep launchers, which ``sandbox sweep --launcher NAME`` picks: ``build(params) -> Launcher``."""


@hookspec
def register_exporters(register: RegisterExporter) -> None:
    """Register exporters of a denoiser's weights to another library: ``register(format, denoiser, export)``."""


@hookspec
def register_loggers(register: Register) -> None:
    """Register loggers, which ``run.loggers`` enables: ``build(params)`` -> an object with run-event hooks."""


# ---------------------------------------------------- run events: called on the enabled loggers, in rank 0 only


@hookspec
def on_run_start(run: RunInfo) -> None:
    """The run folder holds the resolved recipe; training starts, or resumes after ``run.start_step``."""


@hookspec
def on_metrics(run: RunInfo, step: int, record: dict[str, float]) -> None:
    """A line of ``metrics.jsonl`` was written: ``record`` is that line without its ``step``."""


@hookspec
def on_samples(run: RunInfo, step: int, images: torch.Tensor) -> None:
    """A sample grid was drawn after ``step`` steps: ``images`` is the saved picture, (C, H, W) in [0, 1]."""


@hookspec
def on_checkpoint(run: RunInfo, path: Path) -> None:
    """A checkpoint was written to ``path``."""


@hookspec
def on_run_end(run: RunInfo, status: str, summary: dict[str, Any]) -> None:
    """The run ended: finished (``summary``: summary.json), interrupted, diverged or failed (``step``, ``message``)."""
