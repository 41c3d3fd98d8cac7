"""The public plugin contract: four hooks, each handed a ``register`` callable.

``register(name, build, *, params=None, description=None)`` records one
component. ``build`` is a callable or a lazy ``"module:attr"`` path;
``params`` is a dataclass of the component's typed parameters (see
:mod:`sandbox.registry` for the calling convention of each kind).
"""

import pluggy

hookspec = pluggy.HookspecMarker("sandbox")


@hookspec
def register_datasets(register):
    """Register datasets: ``build(params) -> sandbox.data.DataSplits``."""


@hookspec
def register_schedules(register):
    """Register noise schedules: ``build(params) -> sandbox.schedule.Schedule``."""


@hookspec
def register_denoisers(register):
    """Register denoiser networks: ``build(params, shape) -> torch.nn.Module`` with ``forward(x, c_noise)``."""


@hookspec
def register_samplers(register):
    """Register samplers: ``build(params) -> callable(denoise, x_T, schedule, *, generator, callback)``."""
