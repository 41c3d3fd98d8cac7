"""The cosine schedule of Nichol & Dhariwal (2021), "Improved DDPM", eq. 17."""

import math

import torch

from sandbox.errors import RecipeError
from sandbox.schedule import DiscreteSchedule


def alpha_bar(t: torch.Tensor, s: float) -> torch.Tensor:
    """``f(t) / f(0)`` with ``f(t) = cos^2(((t + s) / (1 + s)) * pi / 2)``."""
    f = lambda u: torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    return f(t) / f(torch.zeros_like(t))


def build(params) -> DiscreteSchedule:
    """Betas ``1 - alpha_bar(n/T) / alpha_bar((n-1)/T)``, clipped to ``max_beta``."""
    if params.num_steps < 2:
        raise RecipeError(f"recipe key 'schedule.num_steps': {params.num_steps} is too small; expected an integer >= 2")
    if params.s < 0:
        raise RecipeError(f"recipe key 'schedule.s': {params.s} is negative; expected s >= 0 (the paper uses 0.008)")
    if not 0 < params.max_beta < 1:
        raise RecipeError(f"recipe key 'schedule.max_beta': {params.max_beta}; expected a value in (0, 1)")
    grid = torch.arange(params.num_steps + 1, dtype=torch.float64) / params.num_steps
    ab = alpha_bar(grid, params.s)
    betas = (1.0 - ab[1:] / ab[:-1]).clamp(min=1e-12, max=params.max_beta)
    return DiscreteSchedule(betas)
