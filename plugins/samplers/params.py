"""Typed parameters of the built-in samplers (torch-free, so listing stays fast).

Each dataclass checks its own ranges in ``__post_init__`` (:mod:`sandbox.params`),
so a recipe with ``steps: 0`` fails when it is loaded, before anything is built.

Every sampler steps on a time grid of its own choosing (``grid``: a registered
grid's name, see ``sandbox list``, or an explicit list of times from 1 to 0;
``rho`` is the ``karras`` grid's exponent), so any grid goes with any sampler:
the fields and checks they share are :class:`OnGridParams`'s, which each
sampler's dataclass extends with its own (a sampler redeclares a shared field
only where its default or meaning differs).
"""

from dataclasses import dataclass
from typing import Any, ClassVar, Optional

from sandbox.errors import ParameterError
from sandbox.params import at_least, between, one_of, positive, time_grid

# fmt: off
VARIANCES = ("large", "small")                # DDPM's two choices of the reverse variance
SOLVER_TYPES = ("midpoint", "heun")           # DPM-Solver++(2M) SDE's second-order correction (k-diffusion)
UNIPC_VARIANTS = ("bh1", "bh2")               # UniPC's B(h): h (bh1) or e^h - 1 (bh2), Zhao et al. 2023
# fmt: on


@dataclass
class OnGridParams:
    """What every sampler on a time grid takes (:class:`sandbox.sampling.OnGrid`): its steps and its grid."""

    # fmt: off
    steps: int = 25              # number of steps (= network evaluations)
    grid: Any = "schedule"       # time grid: a registered grid's name or a list of times from 1 to 0
    rho: float = 7.0             # exponent of the "karras" grid
    clip_x0: bool = False        # clip the denoised estimate to [-1, 1] (for images)
    # fmt: on

    steps_optional: ClassVar[bool] = False  # whether ``steps`` may be None (the sampler then picks them)

    def __post_init__(self) -> None:
        at_least(self, "steps", 1, optional=self.steps_optional)
        time_grid(self, "grid")
        positive(self, "rho")


@dataclass
class DDPMParams(OnGridParams):
    """Ancestral sampling, Algorithm 2 of Ho et al. (2020)."""

    # fmt: off
    steps: Optional[int] = None  # type: ignore[assignment]  # number of steps; None = every point of the schedule's grid
    variance: str = "large"      # "large": sigma^2 = beta (the paper's choice); "small": beta-tilde
    # fmt: on

    steps_optional: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        one_of(self, "variance", VARIANCES)


@dataclass
class DDIMParams(OnGridParams):
    """Denoising diffusion implicit models (Song et al. 2021)."""

    # fmt: off
    steps: int = 50              # number of steps (= network evaluations)
    eta: float = 0.0             # 0: deterministic DDIM; 1: DDPM's posterior noise
    # fmt: on

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least(self, "eta", 0.0)


@dataclass
class EulerParams(OnGridParams):
    """Euler steps on the probability-flow ODE (Karras et al. 2022, Algorithm 1)."""

    # fmt: off
    steps: int = 50              # number of steps (= network evaluations)
    # fmt: on


@dataclass
class HeunParams(OnGridParams):
    """Heun's 2nd-order method with optional churn (Karras et al. 2022, Algorithm 2)."""

    # fmt: off
    steps: int = 25              # number of steps; network evaluations = 2 * steps - 1
    grid: Any = "karras"         # time grid; Algorithm 2 steps on "karras" (eq. 5, rho = 7)
    s_churn: float = 0.0         # total stochasticity; 0 is the deterministic ODE solver
    s_tmin: float = 0.0          # churn only where sigma~ >= s_tmin
    s_tmax: Optional[float] = None  # churn only where sigma~ <= s_tmax; None: no upper bound
    s_noise: float = 1.0         # scale of the churn noise (slightly above 1 offsets denoiser loss of detail)
    # fmt: on

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("s_churn", "s_tmin", "s_noise"):
            at_least(self, key, 0.0)
        at_least(self, "s_tmax", 0.0, optional=True)
        if self.s_tmax is not None and self.s_tmax < self.s_tmin:
            raise ParameterError("s_tmin, s_tmax", (self.s_tmin, self.s_tmax), "s_tmin <= s_tmax (or s_tmax null)")


@dataclass
class DPMPP2MParams(OnGridParams):
    """DPM-Solver++(2M), multistep in log-SNR with data prediction (Lu et al. 2022)."""


@dataclass
class EulerAncestralParams(OnGridParams):
    """Euler ancestral steps (k-diffusion's sample_euler_ancestral)."""

    # fmt: off
    steps: int = 100             # number of steps (= network evaluations); first order and stochastic
    eta: float = 1.0             # share of the step's noise drawn afresh; 0 is Euler's ODE step
    s_noise: float = 1.0         # scale of the fresh noise
    # fmt: on

    def __post_init__(self) -> None:
        super().__post_init__()
        between(self, "eta", 0.0, 1.0)
        at_least(self, "s_noise", 0.0)


@dataclass
class DPMPP2MSDEParams(OnGridParams):
    """DPM-Solver++(2M) SDE (Lu et al. 2022; k-diffusion's sample_dpmpp_2m_sde)."""

    # fmt: off
    eta: float = 1.0             # 1: the SDE; 0: the ODE, DPM-Solver++(2M)
    s_noise: float = 1.0         # scale of the fresh noise
    solver_type: str = "midpoint"  # second-order correction: "midpoint" or "heun" (k-diffusion's two)
    # fmt: on

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least(self, "eta", 0.0)
        at_least(self, "s_noise", 0.0)
        one_of(self, "solver_type", SOLVER_TYPES)


@dataclass
class DPMPP3MParams(OnGridParams):
    """DPM-Solver++(3M), third-order multistep with data prediction (Lu et al. 2022)."""

    # fmt: off
    eta: float = 0.0             # 0: the ODE solver; 1: k-diffusion's sample_dpmpp_3m_sde
    s_noise: float = 1.0         # scale of the fresh noise (eta > 0)
    halved_d2: bool = False      # the third-order term as k-diffusion and diffusers write it (half: order 2)
    # fmt: on

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least(self, "eta", 0.0)
        at_least(self, "s_noise", 0.0)


@dataclass
class DPMPP3MSDEParams(DPMPP3MParams):
    """DPM-Solver++(3M) SDE (k-diffusion's sample_dpmpp_3m_sde)."""

    # fmt: off
    steps: int = 50              # number of steps (= network evaluations); the noise needs more than the ODE
    eta: float = 1.0             # 1: the SDE of k-diffusion's sample_dpmpp_3m_sde; 0: the ODE solver
    # fmt: on


@dataclass
class UniPCParams(OnGridParams):
    """UniPC: unified predictor-corrector, data prediction (Zhao et al. 2023)."""

    # fmt: off
    steps: int = 25              # number of steps (= network evaluations; the corrector reuses them)
    order: int = 3               # predictor order p (the corrector makes it p + 1); 3 is the paper's unconditional
    variant: str = "bh2"         # B(h): "bh2" = e^h - 1, "bh1" = h
    corrector: bool = True       # UniC after every step but the last (False: UniP alone)
    lower_order_final: bool = True  # lower the order over the last steps, as diffusers does
    # fmt: on

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least(self, "order", 1)
        if self.order > 3:
            raise ParameterError("order", self.order, "1, 2 or 3")
        one_of(self, "variant", UNIPC_VARIANTS)
