"""DDPM's discrete-time variational bound (Ho et al. 2020, eq. 5) on a discrete schedule of T steps.

    -log p(x_0) <= L_T + sum_{n=2}^{T} L_{n-1} + L_0,
    L_T     = KL(q(x_T | x_0) || p(x_T)),
    L_{n-1} = KL(q(x_{n-1} | x_n, x_0) || p(x_{n-1} | x_n)),
    L_0     = -log p(x_0 | x_1).

``p(x_{n-1} | x_n)`` is the Gaussian whose mean is the posterior mean ``mu~(x_n, x^_0)`` with the denoiser's
``x^_0 = D(x_n, t_n)`` in place of ``x_0`` (eq. 7 and 11) and whose variance is fixed: ``beta_n``
("``beta``", DDPM's sigma_t^2 = beta_t) or the posterior's ``beta~_n`` ("``posterior``", sigma_t^2 = beta~_t).
Two Gaussians of the same mean form, so each term is

    L_{n-1} = 1/2 sum_i [r - 1 - log r + c_n^2 (x_0 - x^_0)_i^2 / s^2],   r = beta~_n / s^2,

with ``c_n`` the posterior mean's coefficient of ``x_0`` and ``s^2`` the chosen variance, estimated with one
draw of ``x_n`` per item and term. ``L_0`` is the discretised Gaussian decoder (eq. 13) for discrete data, a
Gaussian density for continuous data, with mean ``D(x_1, t_1)`` and variance ``beta_1`` ("``beta``") or
``beta~_2`` ("``posterior``": ``beta~_1 = 0``; Ho et al.'s clipped log-variance). ``p(x_T)`` is the samplers'
prior. Every one of the T terms is computed: T network evaluations per item.

``beta`` is the default: with the exact denoiser its gap to the true NLL vanishes as T grows, while with
``beta~`` each early step costs about ``1 / (2 n (n - 1))`` nats per coordinate more (``beta~_n`` is
``(n - 1) / n`` of ``beta_n`` near the data), about 1/2 nat per coordinate in all at any T.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Optional

import torch

from sandbox.engine.likelihood.estimate import Estimate, prior_kl, scales
from sandbox.engine.likelihood.quantise import discretised_gaussian_nll
from sandbox.protocols import Denoise, Schedule
from sandbox.sampling import forward_variance, transition

VARIANCES = ("beta", "posterior")


def vlb(
    denoise: Denoise,
    schedule: Schedule,
    x: torch.Tensor,
    *,
    variance: str = "beta",
    generator: torch.Generator,
    levels: Optional[int] = None,
    progress: Optional[Callable[[float], None]] = None,
) -> Estimate:
    """The bound for each item of ``x``: ``schedule`` must be discrete (``num_steps`` T), ``variance`` one of
    :data:`VARIANCES`; ``progress(fraction)`` hears how much of the work is done."""
    steps = schedule.num_steps
    if not steps:
        raise ValueError("the discrete variational bound needs a discrete schedule (one with num_steps)")
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {', '.join(VARIANCES)}, got {variance!r}")
    b = len(x)
    flat = x.reshape(b, -1).to(torch.float64)
    diffusion = torch.zeros(b, dtype=torch.float64)
    for n in range(2, steps + 1):
        t, s = n / steps, (n - 1) / steps
        coef_x0, _, var_q = transition(schedule, t, s)
        var_p = var_q if variance == "posterior" else forward_variance(schedule, t, s)
        x0 = _denoised(denoise, schedule, x, flat, t, generator)
        ratio = var_q / var_p  # 1 for the posterior variance
        spread = flat.shape[1] * (ratio - 1 - math.log(ratio))
        diffusion += 0.5 * (spread + coef_x0**2 * ((flat - x0) ** 2).sum(1) / var_p)
        if progress is not None:
            progress((n - 1) / steps)
    t1 = 1 / steps
    var_dec = forward_variance(schedule, t1, 0.0) if variance == "beta" else transition(schedule, 2 / steps, t1)[2]
    mean = _denoised(denoise, schedule, x, flat, t1, generator)
    std = torch.full_like(flat, math.sqrt(var_dec))
    if levels:
        reconstruction = discretised_gaussian_nll(flat, mean, std, levels).sum(1)
    else:
        reconstruction = (0.5 * math.log(2 * math.pi * var_dec) + (flat - mean) ** 2 / (2 * var_dec)).sum(1)
    prior = prior_kl(x, schedule)
    return Estimate(
        "vlb",
        prior + diffusion + reconstruction,
        flat.shape[1],
        levels,
        bound=True,
        nfe=float(steps),
        terms={"prior": prior, "reconstruction": reconstruction, "diffusion": diffusion},
        settings={"variance": variance, "steps": steps},
    )


def _denoised(
    denoise: Denoise, schedule: Schedule, x: torch.Tensor, flat: torch.Tensor, t: float, generator: torch.Generator
) -> torch.Tensor:
    """``D(x_t, t)`` for one draw ``x_t = alpha x_0 + sigma eps`` per item, float64 ``[B, D]``."""
    alpha, sigma = (float(v) for v in scales(schedule, torch.tensor([t], dtype=torch.float64)))
    eps = torch.randn(flat.shape, generator=generator, dtype=torch.float64)
    x_t = (alpha * flat + sigma * eps).to(x.dtype).reshape(x.shape)
    return denoise(x_t, torch.tensor(t, dtype=torch.float64)).reshape(len(x), -1).to(torch.float64)
