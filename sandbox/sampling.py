"""The Gaussian algebra samplers share; the sampler protocol itself is :class:`sandbox.protocols.Sampler`.

ODE samplers step in the scale-free coordinates of Karras et al. (2022,
eq. 4 and section 4): ``x~ = x / alpha``, ``sigma~ = sigma / alpha``, where
``x~ = x_0 + sigma~ eps`` is variance exploding for every schedule and the
probability-flow ODE reads ``dx~ / dsigma~ = (x~ - D(x; t)) / sigma~``.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch

from sandbox.protocols import Denoise, Schedule


def scalars(schedule: Schedule, t: float) -> tuple[float, float]:
    """``(alpha(t), sigma(t))`` as float64 Python numbers."""
    alpha, sigma = schedule.alpha_sigma(torch.tensor([t], dtype=torch.float64))
    return float(alpha.double()), float(sigma.double())


def scale_free(schedule: Schedule, t: float) -> tuple[float, float]:
    """``(alpha(t), sigma~(t) = sigma(t) / alpha(t))``; alpha must be positive wherever a sampler steps."""
    alpha, sigma = scalars(schedule, t)
    if not alpha > 0:
        raise ValueError(
            f"the schedule has alpha({t:g}) = {alpha:g}; stepping in x / alpha needs alpha > 0 "
            "(clip alpha_bar away from 0 at t = 1)"
        )
    return alpha, sigma / alpha


def t_from_sigma_tilde(schedule: Schedule, sigma_tilde: float) -> float:
    """The time at which ``sigma~ = sigma_tilde``, by :meth:`Schedule.t_from_log_snr` (``lambda = -2 ln sigma~``)."""
    return float(schedule.t_from_log_snr(torch.tensor([-2.0 * math.log(sigma_tilde)], dtype=torch.float64)))


def grid_steps(schedule: Schedule, steps: int) -> int:
    """How many steps ``schedule.timesteps(steps)`` really has (a discrete grid may have fewer)."""
    return len(schedule.timesteps(steps)) - 1


def prior(noise: torch.Tensor, schedule: Schedule, t_max: float) -> torch.Tensor:
    """``x_T``: the noise scaled to the marginal scale ``sqrt(alpha^2 + sigma^2)`` at ``t_max``."""
    alpha, sigma = scalars(schedule, t_max)
    return noise * (alpha**2 + sigma**2) ** 0.5


def transition(schedule: Schedule, t: float, s: float) -> tuple[float, float, float]:
    """Posterior ``q(x_s | x_t, x_0)`` for s < t (Kingma et al. 2021, eq. 33-34).

    Returns ``(coef_x0, coef_xt, var_small)`` with mean
    ``coef_x0 * x_0 + coef_xt * x_t``; ``var_small`` is DDPM's beta-tilde.
    The forward transition variance ``sigma_{t|s}^2`` (DDPM's beta) is
    :func:`forward_variance`.
    """
    alpha_t, sigma_t = scalars(schedule, t)
    alpha_s, sigma_s = scalars(schedule, s)
    var_ts = forward_variance(schedule, t, s)
    alpha_ts = alpha_t / alpha_s
    coef_xt = alpha_ts * sigma_s**2 / sigma_t**2
    coef_x0 = alpha_s * var_ts / sigma_t**2
    return coef_x0, coef_xt, var_ts * sigma_s**2 / sigma_t**2


def forward_variance(schedule: Schedule, t: float, s: float) -> float:
    """``sigma_{t|s}^2 = sigma_t^2 - (alpha_t / alpha_s)^2 sigma_s^2``, the variance of q(x_t | x_s)."""
    alpha_t, sigma_t = scalars(schedule, t)
    alpha_s, sigma_s = scalars(schedule, s)
    return max(sigma_t**2 - (alpha_t / alpha_s) ** 2 * sigma_s**2, 0.0)


def randn_like(x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


class CountingDenoise:
    """A denoise function that counts the network evaluations (NFE) a sampler actually makes."""

    def __init__(self, denoise: Denoise):
        self.denoise = denoise
        self.nfe = 0

    def __call__(self, x: torch.Tensor, t: Union[float, torch.Tensor]) -> torch.Tensor:
        self.nfe += 1
        return self.denoise(x, t)
