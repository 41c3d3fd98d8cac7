"""The built-in time grids (:class:`sandbox.protocols.Grid`): ``grid(schedule, steps)`` -> float64 times.

Grids in noise level (``uniform_log_snr``, ``karras``) run ``steps`` noise
levels in the scale-free ``sigma~ = sigma / alpha`` of Karras et al. (2022,
eq. 4) from ``min(sigma~(1), 80)`` down to ``sigma~`` at
:func:`sandbox.grids.lowest_time`, then 0, and map them to times with
:meth:`Schedule.t_from_log_snr` (the ends exact). 80 is the ``sigma_max``
Karras et al. sample every model with, VP ones included (their table 1): a
VP schedule clipped near t = 1 reaches ``sigma~`` = 2e4 (``cosine``), and
steps spent above 80 change nothing the data can see. ``trailing`` and ``leading`` are diffusers' timestep
spacings on a grid of ``T`` points ``t = n / T`` (a discrete schedule's own
``T``, else 1,000), diffusers' index ``k`` being ``t = (k + 1) / T``.
"""

from __future__ import annotations

import math

import torch

from sandbox.grids import lowest_time
from sandbox.protocols import Schedule
from sandbox.sampling import scale_free, t_from_sigma_tilde

SIGMA_MAX = 80.0  # the highest noise level sigma~ of the noise-level grids (Karras et al. 2022, table 1)


def _times(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _noise_levels(schedule: Schedule, steps: int, place) -> torch.Tensor:
    """``[t_max, t(sigma~_1), ..., t_min, 0]``: ``place(top, low, u)`` is the noise level at u in [0, 1]."""
    top = scale_free(schedule, 1.0)[1]
    t_max = 1.0 if top <= SIGMA_MAX else t_from_sigma_tilde(schedule, SIGMA_MAX)
    if steps < 2:
        return _times([t_max, 0.0])
    t_min = lowest_time(schedule)
    top, low = scale_free(schedule, t_max)[1], scale_free(schedule, t_min)[1]
    inner = [t_from_sigma_tilde(schedule, place(top, low, i / (steps - 1))) for i in range(1, steps - 1)]
    return _times([t_max, *inner, t_min, 0.0])


def build_schedule(params) -> object:
    return lambda schedule, steps: schedule.timesteps(steps).to(torch.float64)


def build_uniform_t(params) -> object:
    return lambda schedule, steps: torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)


def build_uniform_log_snr(params) -> object:
    """Evenly spaced in ``lambda = -2 ln sigma~``: the "logSNR" steps of Lu et al. (2022), section 3.3."""
    geometric = lambda top, low, u: math.exp(math.log(top) + u * math.log(low / top))
    return lambda schedule, steps: _noise_levels(schedule, steps, geometric)


def build_karras(params) -> object:
    """``sigma_i = (sigma_max^(1/rho) + i / (n - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho`` (eq. 5)."""
    rho = params.rho if params is not None else 7.0
    power = lambda top, low, u: (top ** (1.0 / rho) + u * (low ** (1.0 / rho) - top ** (1.0 / rho))) ** rho
    return lambda schedule, steps: _noise_levels(schedule, steps, power)


def _grid_points(schedule: Schedule, steps: int) -> tuple[int, int]:
    """``(T, n)``: the grid's point count and the steps it can hold."""
    T = int(schedule.num_steps or 1000)
    return T, max(1, min(steps, T))


def build_trailing(params) -> object:
    """``round(T - i T / n)`` for i < n, then 0: diffusers' ``arange(T, 0, -T / n).round() - 1`` as times."""

    def grid(schedule: Schedule, steps: int) -> torch.Tensor:
        T, n = _grid_points(schedule, steps)
        return _times([round(T - i * T / n) / T for i in range(n)] + [0.0])

    return grid


def build_leading(params) -> object:
    """``(i (T // n) + 1) / T`` for i from n - 1 down to 0, then 0: diffusers' ``arange(n) * (T // n)``."""

    def grid(schedule: Schedule, steps: int) -> torch.Tensor:
        T, n = _grid_points(schedule, steps)
        ratio = T // n
        return _times([(i * ratio + 1) / T for i in range(n - 1, -1, -1)] + [0.0])

    return grid
