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


@dataclass
class SigmoidParams:
    """Sigmoid alpha-bar schedule (Jabri et al. 2022; Chen 2023, Algorithm 1)."""

    start: float = -3.0        # sigmoid input at t = 0 (Algorithm 1's default)
    end: float = 3.0           # sigmoid input at t = 1
    tau: float = 1.0           # temperature; larger is closer to linear in t
    clip_min: float = 1e-9     # floor on alpha_bar, so alpha(1) > 0


@dataclass
class EDMParams:
    """EDM noise levels and training distribution (Karras et al. 2022, table 1)."""

    sigma_min: float = 0.002   # lowest sampling noise level
    sigma_max: float = 80.0    # highest sampling noise level
    rho: float = 7.0           # time-step exponent of the sampling grid (eq. 5)
    p_mean: float = -1.2       # training: mean of ln(sigma)
    p_std: float = 1.2         # training: standard deviation of ln(sigma)
