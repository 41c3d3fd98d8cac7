"""What a likelihood estimator returns, its units, and the range of noise levels the estimators integrate over."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from sandbox.grids import lowest_time
from sandbox.protocols import Schedule

ESTIMATORS = ("vlb", "elbo", "ode")


@dataclass
class Estimate:
    """One estimator's ``-log p(x)`` for each of a batch of items.

    ``nats`` is per item (float64 ``[N]``): a probability mass's ``-log P(x)`` when the data is discrete
    (``levels`` evenly spaced values per coordinate), else a density's ``-log p(x)`` in the model's units.
    :attr:`per_dim` turns it into bits per dimension for discrete data and nats per dimension otherwise.
    """

    # fmt: off
    estimator: str                 # vlb, elbo or ode
    nats: torch.Tensor             # -log p(x) per item, float64 [N]
    dims: int                      # coordinates per item
    levels: Optional[int]          # discrete data: values per coordinate; None: continuous
    bound: bool                    # an upper bound on the NLL (a variational bound, or dequantised)
    nfe: float                     # network evaluations per item (a forward with its backward counts one)
    terms: dict[str, torch.Tensor] = field(default_factory=dict)  # the parts of the NLL, nats per item
    settings: dict[str, Any] = field(default_factory=dict)        # what the figure depends on
    # fmt: on

    @property
    def unit(self) -> str:
        return "bits/dim" if self.levels else "nats/dim"

    def per_dim(self, nats: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Per item, in :attr:`unit`."""
        value = (self.nats if nats is None else nats) / self.dims
        return value / math.log(2) if self.levels else value

    def record(self) -> dict[str, Any]:
        """The summary's entry: the mean over items, its standard error, the unit, and the mean of each term."""
        values = self.per_dim()
        n = values.numel()
        stderr = float(values.std() / math.sqrt(n)) if n > 1 else float("nan")
        return {
            "nll": float(values.mean()),
            "stderr": stderr,
            "unit": self.unit,
            "bound": self.bound,
            "estimator": self.estimator,
            "items": n,
            "nfe_per_item": self.nfe,
            "terms": {name: float(self.per_dim(v).mean()) for name, v in self.terms.items()},
            **self.settings,
        }


@dataclass(frozen=True)
class LogSnrRange:
    """``[lambda_min, lambda_max]``: the estimators integrate from the data's end (``t_min``) to the noise end."""

    low: float  # lambda(1), the noise end
    high: float  # lambda(t_min), the data end
    t_min: float

    @classmethod
    def of(cls, schedule: Schedule, log_snr_max: float) -> LogSnrRange:
        """The schedule's whole range, capped at ``log_snr_max`` at the data's end.

        The data's end is the schedule's lowest time (:func:`sandbox.grids.lowest_time`: 1/T for a discrete
        schedule), or the time where the log-SNR reaches ``log_snr_max`` if that comes later.
        """
        t = torch.tensor([lowest_time(schedule), 1.0], dtype=torch.float64)
        high, low = (float(v) for v in schedule.log_snr(t).double())
        if high > log_snr_max:
            high = log_snr_max
            t_min = float(schedule.t_from_log_snr(torch.tensor([high], dtype=torch.float64))[0])
        else:
            t_min = float(t[0])
        if not high > low:
            raise ValueError(f"the schedule's log-SNR does not decrease from t = {t_min:g} to 1 ({high:g} -> {low:g})")
        return cls(low, high, t_min)


def scales(schedule: Schedule, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(alpha, sigma)`` at times ``t`` in float64."""
    alpha, sigma = schedule.alpha_sigma(t.to(torch.float64))
    return alpha.to(torch.float64), sigma.to(torch.float64)


def prior_kl(x: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """``KL(q(x_1 | x) || N(0, (alpha_1^2 + sigma_1^2) I))`` per item, nats: the prior term of both bounds.

    The prior is the one every sampler starts from (:func:`sandbox.sampling.prior`).
    """
    alpha, sigma = scales(schedule, torch.ones(1, dtype=torch.float64))
    var = alpha**2 + sigma**2
    x = x.reshape(len(x), -1).to(torch.float64)
    dims = x.shape[1]
    return 0.5 * (dims * (sigma**2 / var - 1 - torch.log(sigma**2 / var)) + (alpha**2 / var) * (x * x).sum(1))


def prior_log_density(x1: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """``log N(x_1; 0, (alpha_1^2 + sigma_1^2) I)`` per item: the sampler's prior."""
    alpha, sigma = scales(schedule, torch.ones(1, dtype=torch.float64))
    var = alpha**2 + sigma**2
    x1 = x1.reshape(len(x1), -1).to(torch.float64)
    return -0.5 * (x1.shape[1] * torch.log(2 * math.pi * var) + (x1 * x1).sum(1) / var)
