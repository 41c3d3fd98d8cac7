"""The linear beta schedule of Ho et al. (2020), section 4."""

import torch

from sandbox.schedule import DiscreteSchedule


def build(params) -> DiscreteSchedule:
    """``beta_n = beta_start + (beta_end - beta_start) (n - 1) / (T - 1)`` for n = 1..T."""
    betas = torch.linspace(params.beta_start, params.beta_end, params.num_steps, dtype=torch.float64)
    return DiscreteSchedule(betas)
