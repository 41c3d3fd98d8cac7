"""The continuous-time ELBO of Kingma et al. (2021), "Variational Diffusion Models", for any schedule.

    -log p(x) <= KL(q(x_1 | x) || p(x_1)) + E[-log p(x | z_0)] + L_diff,
    L_diff = 1/2 int_{lambda_min}^{lambda_max} e^lambda E_eps ||x - D(z_lambda)||^2 dlambda

(eq. 17 written in log-SNR, ``-SNR'(t) dt = e^lambda dlambda``), with ``z_lambda = alpha x + sigma eps`` and
``D`` the denoiser. The integral is estimated by Monte Carlo with log-SNR as the importance variable: ``K``
draws per item, stratified (``lambda_k = lambda_min + (lambda_max - lambda_min)(k + u) / K`` with one uniform
``u`` per item, VDM's low-discrepancy sampler), so the estimate is unbiased and its variance falls as 1/K^2
where the integrand is smooth. The integrand is flat where the denoiser is good at high SNR (``D`` per
dimension for Gaussian data), so uniform in log-SNR spends the draws where the loss is.

The prior ``p(x_1)`` is the samplers' (:func:`sandbox.sampling.prior`). The decoder at the data's end
``lambda_max``: for discrete data VDM's factorised one, ``p(x_i = v | z_0) \\propto exp(-(z_0i / alpha_0 -
v)^2 / (2 sigma~_0^2))`` over the data's values ``v``, so the bound is on the probability mass; for continuous
data the Gaussian ``N(x; z_0 / alpha_0, sigma~_0^2 I)``, whose expected NLL is ``D/2 log(2 pi e sigma~_0^2)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Optional

import torch

from sandbox.engine.likelihood.estimate import Estimate, LogSnrRange, prior_kl, scales
from sandbox.engine.likelihood.quantise import bin_width, level_values
from sandbox.protocols import Denoise, Schedule

DECODER_ELEMENTS = 1 << 24  # items x coordinates x levels held at once by the discrete decoder


def elbo(
    denoise: Denoise,
    schedule: Schedule,
    x: torch.Tensor,
    *,
    span: LogSnrRange,
    draws: int,
    generator: torch.Generator,
    levels: Optional[int] = None,
    sigma_data: Optional[float] = None,
    progress: Optional[Callable[[float], None]] = None,
) -> Estimate:
    """The ELBO's ``-log p(x)`` bound for each item of ``x``, with ``draws`` network evaluations per item;
    ``progress(fraction)`` hears how much of the work is done.

    ``sigma_data`` (continuous data): subtract the control variate ``c sigma~^2 (||eps||^2 - n)``, of mean 0,
    ``c = (s^2 / (s^2 + sigma~^2))^2`` with ``s = sigma_data``: at high SNR the error of a good denoiser of data
    with a density is mostly the noise itself, ``x - D ~ -sigma~ s^2 / (s^2 + sigma~^2) eps`` (exactly so for
    Gaussian data of std ``s``), whose ``chi^2`` spread would otherwise dominate the estimate's variance.
    """
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    b = len(x)
    flat = x.reshape(b, -1).to(torch.float64)
    width = span.high - span.low
    offset = torch.rand(b, generator=generator, dtype=torch.float64)
    diffusion = torch.zeros(b, dtype=torch.float64)
    for k in range(draws):
        lam = span.low + width * (k + offset) / draws
        t = schedule.t_from_log_snr(lam).to(torch.float64)
        alpha, sigma = scales(schedule, t)
        eps = torch.randn(flat.shape, generator=generator, dtype=torch.float64)
        z = alpha[:, None] * flat + sigma[:, None] * eps
        x0 = denoise(z.to(x.dtype).reshape(x.shape), t).reshape(b, -1).to(torch.float64)
        error = ((flat - x0) ** 2).sum(1)
        if sigma_data is not None:
            noise2 = (sigma / alpha) ** 2
            c = (sigma_data**2 / (sigma_data**2 + noise2)) ** 2
            error = error - c * noise2 * ((eps * eps).sum(1) - flat.shape[1])
        diffusion += 0.5 * torch.exp(lam) * error * (width / draws)
        if progress is not None:
            progress((k + 1) / draws)
    noise = math.exp(-span.high / 2)  # sigma~ at the data's end
    if levels:
        reconstruction = decoder_nll(flat, noise, levels, generator)
    else:
        value = 0.5 * flat.shape[1] * math.log(2 * math.pi * math.e * noise**2)
        reconstruction = torch.full((b,), value, dtype=torch.float64)
    prior = prior_kl(x, schedule)
    return Estimate(
        "elbo",
        prior + reconstruction + diffusion,
        flat.shape[1],
        levels,
        bound=True,
        nfe=float(draws),
        terms={"prior": prior, "reconstruction": reconstruction, "diffusion": diffusion},
        settings={"draws": draws, "log_snr": [span.low, span.high]},
    )


def decoder_nll(flat: torch.Tensor, noise: float, levels: int, generator: torch.Generator) -> torch.Tensor:
    """``-log p(x | z_0)`` per item for ``z_0 / alpha_0 = x + noise eps``: VDM's factorised decoder over the levels."""
    values = level_values(levels)
    index = ((flat + 1) / bin_width(levels)).round().clamp(0, levels - 1).long()
    z = flat + noise * torch.randn(flat.shape, generator=generator, dtype=torch.float64)
    out = torch.empty(len(flat), dtype=torch.float64)
    chunk = max(1, DECODER_ELEMENTS // (flat.shape[1] * levels))
    for start in range(0, len(flat), chunk):
        zc, ic = z[start : start + chunk], index[start : start + chunk]
        logits = -((zc[..., None] - values) ** 2) / (2 * noise**2)
        log_p = logits.gather(-1, ic[..., None])[..., 0] - torch.logsumexp(logits, -1)
        out[start : start + chunk] = -log_p.sum(1)
    return out
