"""The cosine schedule of Nichol & Dhariwal (2021), "Improved DDPM", eq. 17."""

import math

import torch

from sandbox.schedule import DiscreteSchedule


def alpha_bar(t: torch.Tensor, s: float) -> torch.Tensor:
    """``f(t) / f(0)`` with ``f(t) = cos^2(((t + s) / (1 + s)) * pi / 2)``."""
    f = lambda u: torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return f(t) / f(torch.zeros_like(t))


def build(params) -> DiscreteSchedule:
    """Betas ``1 - alpha_bar(n/T) / alpha_bar((n-1)/T)``, clipped to ``max_beta``."""
    grid = torch.arange(params.num_steps + 1, dtype=torch.float64) / params.num_steps
    ab = alpha_bar(grid, params.s)
    betas = (1.0 - ab[1:] / ab[:-1]).clamp(min=1e-12, max=params.max_beta)
    return DiscreteSchedule(betas)
