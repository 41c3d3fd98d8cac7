"""Data on evenly spaced values, and the decoders and dequantisation that turn a density into a probability.

A dataset whose items take ``levels`` evenly spaced values in [-1, 1] (``DataSplits.levels``: 256 for 8-bit
images, 17 for the digits' 0..16) is discrete: its likelihood is a probability mass, in bits per dimension.
Bin ``k`` is ``[v_k - delta/2, v_k + delta/2]`` with ``v_k = -1 + k delta`` and ``delta = 2 / (levels - 1)``.
"""

from __future__ import annotations

import math

import torch


def bin_width(levels: int) -> float:
    """``delta = 2 / (levels - 1)``: the distance between neighbouring values of data scaled to [-1, 1]."""
    return 2.0 / (levels - 1)


def dequantise(x: torch.Tensor, levels: int, generator: torch.Generator) -> torch.Tensor:
    """``y = x + delta (u - 1/2)``, ``u ~ U[0, 1)`` per coordinate: uniform dequantisation (Theis et al. 2016).

    For any density ``p`` on ``y``, ``log P(x) >= E_u[log p(y)] + D log delta`` (Jensen's inequality), so
    a density of the dequantised data gives an upper bound on the discrete data's negative log-likelihood:
    :func:`mass_bound`.
    """
    u = torch.rand(x.shape, generator=generator, dtype=torch.float64, device=generator.device).to(x.device)
    return x + (bin_width(levels) * (u - 0.5)).to(x.dtype)


def mass_bound(density_nats: torch.Tensor, dims: int, levels: int) -> torch.Tensor:
    """``-log P(x) <= -log p(y) - D log delta``: a dequantised density's NLL as a bound on the mass's."""
    return density_nats - dims * math.log(bin_width(levels))


def discretised_gaussian_nll(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, levels: int) -> torch.Tensor:
    """``-log`` of the mass a Gaussian ``N(mean, std^2)`` puts on ``x``'s bin, per coordinate (Ho et al. 2020, eq. 13).

    The first and last bins extend to -inf and +inf, so the masses over the ``levels`` values sum to 1.
    Computed with ``log_ndtr`` on the side of the bin away from the mean, so it stays finite and accurate
    when ``std`` is much smaller than the bin.
    """
    half = bin_width(levels) / 2
    x, mean, std = (torch.as_tensor(v, dtype=torch.float64) for v in (x, mean, std))
    upper = torch.where(x >= 1 - half, torch.full_like(x, math.inf), (x + half - mean) / std)
    lower = torch.where(x <= -1 + half, torch.full_like(x, -math.inf), (x - half - mean) / std)
    # log(Phi(upper) - Phi(lower)), written on whichever tail is small: Phi(b) - Phi(a) = Phi(-a) - Phi(-b)
    flip = (lower + upper) > 0
    a = torch.where(flip, -upper, lower)
    b = torch.where(flip, -lower, upper)
    log_b = torch.special.log_ndtr(b)
    log_a = torch.special.log_ndtr(a)
    return -(log_b + torch.log1p(-torch.exp(log_a - log_b)))


def decoder_log_snr(levels: int) -> float:
    """The log-SNR where the noise ``sigma~`` is a sixth of the bin width: there a value is read back from its noisy
    copy with certainty (its neighbours are 6 sigma~ away) and the ELBO can hand over to its decoder. For 8-bit
    data it is 13.3, where Kingma et al. (2021) learned to end their schedule on CIFAR-10; for 17 levels 7.7."""
    return -2.0 * math.log(bin_width(levels) / 6)


def level_values(levels: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The ``levels`` values ``-1 + k delta``, k = 0..levels-1."""
    return torch.linspace(-1.0, 1.0, levels, dtype=dtype)
