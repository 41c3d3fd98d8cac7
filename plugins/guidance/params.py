"""Typed parameters of the built-in guidance methods (torch-free, so the CLI can list them cheaply).

Noise levels are ``sigma~ = sigma / alpha``, EDM's sigma, which means the same
for every schedule (0 at clean data; about 80 at the noisiest of EDM's grid).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from sandbox.errors import ParameterError
from sandbox.params import at_least


def _finite(obj: object, *keys: str) -> None:
    for key in keys:
        value = getattr(obj, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ParameterError(key, value, "a finite number")


@dataclass
class IntervalParams:
    """The guidance scale and the interval of noise levels where it applies (Kynkäänniemi et al. 2024)."""

    # fmt: off
    scale: float = 2.0              # guidance weight w; 1 is the model's own (conditional) estimate, no guidance
    sigma_low: float = 0.0          # guide only where sigma~ > sigma_low ...
    sigma_high: float = math.inf    # ... and sigma~ <= sigma_high (EDM's sigma); elsewhere the plain estimate
    # fmt: on

    def __post_init__(self) -> None:
        _finite(self, "scale")
        at_least(self, "sigma_low", 0.0)
        if (
            isinstance(self.sigma_high, bool)
            or not isinstance(self.sigma_high, (int, float))
            or math.isnan(self.sigma_high)
        ):
            raise ParameterError("sigma_high", self.sigma_high, "a noise level (a number, .inf for no upper bound)")
        if not self.sigma_high > self.sigma_low:
            raise ParameterError("sigma_high", self.sigma_high, f"a noise level above sigma_low ({self.sigma_low:g})")


@dataclass
class CFGParams(IntervalParams):
    """Classifier-free guidance (Ho & Salimans 2022), limited to an interval of noise levels when asked."""

    # fmt: off
    batched: Optional[bool] = None  # both estimates in one forward on a doubled batch; null: on a GPU only
    # fmt: on


@dataclass
class AutoguidanceParams(IntervalParams):
    """Autoguidance (Karras et al. 2024): the model guided by a weaker version of itself."""

    # fmt: off
    guide: str = ""                 # the guiding model: a run folder (its final EMA weights) or a checkpoint .pt
    # fmt: on

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.guide, str) or not self.guide.strip():
            raise ParameterError(
                "guide", self.guide, "the guiding model: a run folder or a checkpoint file (guidance.guide=RUN_DIR)"
            )


@dataclass
class APGParams(IntervalParams):
    """Adaptive projected guidance (Sadat et al. 2024), on the estimate of x_0."""

    # fmt: off
    eta: float = 0.0                # weight of the update's part parallel to D_c (1: classifier-free guidance)
    norm_threshold: float = 0.0     # r: the update rescaled to a norm of at most r per item; 0: no rescaling
    momentum: float = 0.0           # beta of the reverse momentum over steps (the paper's -0.5 to -0.75); 0: off
    batched: Optional[bool] = None  # both estimates in one forward on a doubled batch; null: on a GPU only
    # fmt: on

    def __post_init__(self) -> None:
        super().__post_init__()
        _finite(self, "eta", "momentum")
        at_least(self, "norm_threshold", 0.0)
