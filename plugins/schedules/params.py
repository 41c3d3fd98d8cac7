"""Typed parameters of the built-in schedules (torch-free, so listing stays fast)."""

from dataclasses import dataclass


@dataclass
class LinearParams:
    """DDPM's linear betas (Ho et al. 2020)."""

    num_steps: int = 1000      # T, number of discrete diffusion steps
    beta_start: float = 1e-4   # beta_1
    beta_end: float = 0.02     # beta_T


@dataclass
class CosineParams:
    """Cosine alpha-bar schedule (Nichol & Dhariwal 2021)."""

    num_steps: int = 1000      # T, number of discrete diffusion steps
    s: float = 0.008           # offset that keeps beta small near t = 0
    max_beta: float = 0.999    # clip on beta_t near t = 1, as in the paper
