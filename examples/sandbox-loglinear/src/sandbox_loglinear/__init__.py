"""A diffusion-sandbox plugin: the variance-preserving schedule whose log-SNR is linear in t.

This module stays torch-free (``sandbox list`` imports it): the schedule
itself lives in :mod:`sandbox_loglinear.schedule`, imported only when a
recipe uses it.
"""

from dataclasses import dataclass

from sandbox import hookimpl
from sandbox.errors import ParameterError
from sandbox.params import finite

__version__ = "0.1.0"


@dataclass
class LogLinearParams:
    """Log-SNR linear in t (Kingma et al. 2021)."""

    # fmt: off
    lambda_max: float = 10.0   # log-SNR at t = 0 (almost clean data)
    lambda_min: float = -10.0  # log-SNR at t = 1 (almost pure noise)
    # fmt: on

    def __post_init__(self) -> None:
        """Checked when the recipe is loaded, so ``sandbox show`` already rejects a bad pair."""
        finite(self, "lambda_max", "lambda_min")
        if not self.lambda_min < self.lambda_max:
            raise ParameterError("lambda_min", self.lambda_min, f"a log-SNR below lambda_max ({self.lambda_max})")


@hookimpl
def register_schedules(register):
    register("loglinear", "sandbox_loglinear.schedule:build", params=LogLinearParams)
