"""Typed parameters of the built-in schedules (torch-free, so listing stays fast).

Each dataclass checks its own ranges in ``__post_init__`` (:mod:`sandbox.params`),
so a recipe with ``num_steps: 1`` fails when it is loaded, before anything is built.
"""

import math
from dataclasses import dataclass

from sandbox.errors import ParameterError
from sandbox.params import at_least, between, finite, positive


@dataclass
class LinearParams:
    """DDPM's linear betas (Ho et al. 2020)."""

    # fmt: off
    num_steps: int = 1000      # T, number of discrete diffusion steps
    beta_start: float = 1e-4   # beta_1
    beta_end: float = 0.02     # beta_T
    # fmt: on

    def __post_init__(self) -> None:
        at_least(self, "num_steps", 2)
        for key in ("beta_start", "beta_end"):
            between(self, key, 0.0, 1.0, low_open=True, high_open=True)
        if not self.beta_start <= self.beta_end:
            raise ParameterError("beta_start, beta_end", (self.beta_start, self.beta_end), "beta_start <= beta_end")


@dataclass
class CosineParams:
    """Cosine alpha-bar schedule (Nichol & Dhariwal 2021)."""

    # fmt: off
    num_steps: int = 1000      # T, number of discrete diffusion steps
    s: float = 0.008           # offset that keeps beta small near t = 0
    max_beta: float = 0.999    # clip on beta_t near t = 1, as in the paper
    # fmt: on

    def __post_init__(self) -> None:
        at_least(self, "num_steps", 2)
        at_least(self, "s", 0.0)
        between(self, "max_beta", 0.0, 1.0, low_open=True, high_open=True)


def _sigmoid(x: float) -> float:
    """``1 / (1 + exp(-x))`` in float64, without overflow for large ``|x|``."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


@dataclass
class SigmoidParams:
    """Sigmoid alpha-bar schedule (Jabri et al. 2022; Chen 2023, Algorithm 1)."""

    # fmt: off
    start: float = -3.0        # sigmoid input at t = 0 (Algorithm 1's default)
    end: float = 3.0           # sigmoid input at t = 1
    tau: float = 1.0           # temperature; larger is closer to linear in t
    clip_min: float = 1e-9     # floor on alpha_bar, so alpha(1) > 0
    # fmt: on

    def __post_init__(self) -> None:
        finite(self, "start", "end")
        positive(self, "tau")
        between(self, "clip_min", 0.0, 1.0, low_open=True, high_open=True)
        if not self.start < self.end:
            raise ParameterError("start, end", (self.start, self.end), "start < end")
        if not _sigmoid(self.end / self.tau) > _sigmoid(self.start / self.tau):  # alpha_bar divides by the gap
            raise ParameterError(
                "start, end, tau",
                (self.start, self.end, self.tau),
                "sigmoid(start / tau) < sigmoid(end / tau) in float64; here both round to the "
                "same value: move start and end towards 0 or raise tau",
            )


@dataclass
class EDMParams:
    """EDM noise levels and training distribution (Karras et al. 2022, table 1)."""

    # fmt: off
    sigma_min: float = 0.002   # lowest sampling noise level
    sigma_max: float = 80.0    # highest sampling noise level
    rho: float = 7.0           # time-step exponent of the sampling grid (eq. 5)
    p_mean: float = -1.2       # training: mean of ln(sigma)
    p_std: float = 1.2         # training: standard deviation of ln(sigma)
    # fmt: on

    def __post_init__(self) -> None:
        positive(self, "sigma_min", "sigma_max", "rho", "p_std")
        finite(self, "p_mean")
        if not self.sigma_min < self.sigma_max:
            raise ParameterError("sigma_min, sigma_max", (self.sigma_min, self.sigma_max), "sigma_min < sigma_max")
