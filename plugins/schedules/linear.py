"""The linear beta schedule of Ho et al. (2020), section 4."""

import torch

from sandbox.errors import RecipeError
from sandbox.schedule import DiscreteSchedule


def build(params) -> DiscreteSchedule:
    """``beta_n = beta_start + (beta_end - beta_start) (n - 1) / (T - 1)`` for n = 1..T."""
    if params.num_steps < 2:
        raise RecipeError(f"recipe key 'schedule.num_steps': {params.num_steps} is too small; expected an integer >= 2")
    if not 0 < params.beta_start <= params.beta_end < 1:
        raise RecipeError(
            f"recipe keys 'schedule.beta_start', 'schedule.beta_end': {params.beta_start}, {params.beta_end}; "
            "expected 0 < beta_start <= beta_end < 1"
        )
    betas = torch.linspace(params.beta_start, params.beta_end, params.num_steps, dtype=torch.float64)
    return DiscreteSchedule(betas)
