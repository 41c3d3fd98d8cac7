"""The hooks a plugin implements: one per kind, each handed a :class:`sandbox.protocols.Register`.

What each kind's ``build`` receives and returns is in :mod:`sandbox.protocols`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from sandbox.protocols import Register, RegisterExporter

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
def register_grids(register: Register) -> None:
    """Register time grids, which a sampler section names (``sampler.grid``): ``build(params) -> Grid``."""


@hookspec
def register_launchers(register: Register) -> None:
    """Register sweep launchers, which ``sandbox sweep --launcher NAME`` picks: ``build(params) -> Launcher``."""


@hookspec
def register_exporters(register: RegisterExporter) -> None:
    """Register exporters of a denoiser's weights to another library: ``register(format, denoiser, export)``."""
