"""A diffusion-sandbox plugin: the variance-preserving schedule whose log-SNR is linear in t.

This module stays torch-free (``sandbox list`` imports it): the schedule
itself lives in :mod:`sandbox_loglinear.schedule`, imported only when a
recipe uses it.
"""

from dataclasses import dataclass

from sandbox import hookimpl

__version__ = "0.1.0"


@dataclass
class LogLinearParams:
    """Log-SNR linear in t (Kingma et al. 2021)."""

    lambda_max: float = 10.0   # log-SNR at t = 0 (almost clean data)
    lambda_min: float = -10.0  # log-SNR at t = 1 (almost pure noise)


@hookimpl
def register_schedules(register):
    register("loglinear", "sandbox_loglinear.schedule:build", params=LogLinearParams)
