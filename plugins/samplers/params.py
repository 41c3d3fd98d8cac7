"""Typed parameters of the built-in samplers (torch-free, so listing stays fast).

Each dataclass checks its own ranges in ``__post_init__`` (:mod:`sandbox.params`),
so a recipe with ``steps: 0`` fails when it is loaded, before anything is built.
"""

from dataclasses import dataclass
from typing import Optional

from sandbox.errors import ParameterError
from sandbox.params import at_least, one_of, positive

# fmt: off
VARIANCES = ("large", "small")                # DDPM's two choices of the reverse variance
SPACINGS = ("log_snr", "karras", "schedule")  # Heun's placements of the noise levels
# fmt: on


@dataclass
class DDPMParams:
    """Ancestral sampling, Algorithm 2 of Ho et al. (2020)."""

    # fmt: off
    steps: Optional[int] = None  # number of steps; None = every point of the schedule's grid
    variance: str = "large"      # "large": sigma^2 = beta (the paper's choice); "small": beta-tilde
    clip_x0: bool = False        # clip the denoised estimate to [-1, 1] (for images)
    # fmt: on

    def __post_init__(self) -> None:
        at_least(self, "steps", 1, optional=True)
        one_of(self, "variance", VARIANCES)


@dataclass
class DDIMParams:
    """Denoising diffusion implicit models (Song et al. 2021)."""

    # fmt: off
    steps: int = 50              # number of steps (= network evaluations)
    eta: float = 0.0             # 0: deterministic DDIM; 1: DDPM's posterior noise
    clip_x0: bool = False        # clip the denoised estimate to [-1, 1] (for images)
    # fmt: on

    def __post_init__(self) -> None:
        at_least(self, "steps", 1)
        at_least(self, "eta", 0.0)


@dataclass
class EulerParams:
    """Euler steps on the probability-flow ODE (Karras et al. 2022, Algorithm 1)."""

    # fmt: off
    steps: int = 50              # number of steps (= network evaluations)
    clip_x0: bool = False        # clip the denoised estimate to [-1, 1] (for images)
    # fmt: on

    def __post_init__(self) -> None:
        at_least(self, "steps", 1)


@dataclass
class HeunParams:
    """Heun's 2nd-order method with optional churn (Karras et al. 2022, Algorithm 2)."""

    # fmt: off
    steps: int = 25              # number of steps; network evaluations = 2 * steps - 1
    s_churn: float = 0.0         # total stochasticity; 0 is the deterministic ODE solver
    s_tmin: float = 0.0          # churn only where sigma~ >= s_tmin
    s_tmax: Optional[float] = None  # churn only where sigma~ <= s_tmax; None: no upper bound
    s_noise: float = 1.0         # scale of the churn noise (slightly above 1 offsets denoiser loss of detail)
    spacing: str = "log_snr"     # noise levels: "log_snr" (uniform in log sigma~), "karras" (eq. 5), "schedule"
    rho: float = 7.0             # exponent of the "karras" spacing
    clip_x0: bool = False        # clip the denoised estimate to [-1, 1] (for images)
    # fmt: on

    def __post_init__(self) -> None:
        at_least(self, "steps", 1)
        for key in ("s_churn", "s_tmin", "s_noise"):
            at_least(self, key, 0.0)
        at_least(self, "s_tmax", 0.0, optional=True)
        if self.s_tmax is not None and self.s_tmax < self.s_tmin:
            raise ParameterError("s_tmin, s_tmax", (self.s_tmin, self.s_tmax), "s_tmin <= s_tmax (or s_tmax null)")
        one_of(self, "spacing", SPACINGS)
        positive(self, "rho")


@dataclass
class DPMPP2MParams:
    """DPM-Solver++(2M), multistep in log-SNR with data prediction (Lu et al. 2022)."""

    # fmt: off
    steps: int = 25              # number of steps (= network evaluations)
    clip_x0: bool = False        # clip the denoised estimate to [-1, 1] (for images)
    # fmt: on

    def __post_init__(self) -> None:
        at_least(self, "steps", 1)
