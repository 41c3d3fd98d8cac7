"""Typed parameters of the built-in samplers (torch-free, so listing stays fast)."""

from dataclasses import dataclass
from typing import Optional


@dataclass
class DDPMParams:
    """Ancestral sampling, Algorithm 2 of Ho et al. (2020)."""

    steps: Optional[int] = None  # number of steps; None = every point of the schedule's grid
    variance: str = "large"      # "large": sigma^2 = beta (the paper's choice); "small": beta-tilde
    clip_x0: bool = False        # clip the denoised estimate to [-1, 1] (for images)


@dataclass
class DDIMParams:
    """Denoising diffusion implicit models (Song et al. 2021)."""

    steps: int = 50              # number of steps (= network evaluations)
    eta: float = 0.0             # 0: deterministic DDIM; 1: DDPM's posterior noise
    clip_x0: bool = False        # clip the denoised estimate to [-1, 1] (for images)
