"""The training objective: a weighted MSE on the prediction target (EDM's ``training/loss.py`` in one class).

For ``x_t = alpha x_0 + sigma eps`` with ``t`` from the schedule's
``sample_t``, the loss of one example is ``w || F(c_in x_t, c_noise) - F* ||^2``
with the scalings and ``F*`` of :class:`sandbox.precond.Preconditioned` and
``w = lambda c_out^2`` from the weighting table (:data:`sandbox.targets.WEIGHTINGS`).
"""

from __future__ import annotations

from typing import Optional

import torch

from sandbox.precond import Preconditioned, per_item
from sandbox.targets import WEIGHTINGS, loss_weight


class DiffusionLoss:
    """``E_{t, eps} w(t) || F(c_in x_t, c_noise) - F* ||^2``, one value per example."""

    def __init__(self, weighting: str = "uniform", min_snr_gamma: float = 5.0):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown loss weighting {weighting!r}; expected one of {', '.join(WEIGHTINGS)}")
        self.weighting, self.gamma = weighting, min_snr_gamma

    def __call__(
        self, denoiser: Preconditioned, x0: torch.Tensor, generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        """Per-example losses; ``generator`` (a seeded CPU generator) gives the same draws on every device."""
        schedule, n = denoiser.schedule, x0.shape[0]
        if generator is None:
            t = schedule.sample_t(n, device=x0.device)
            eps = torch.randn_like(x0)
        else:
            t = schedule.sample_t(n, generator).to(x0.device)
            eps = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
        s = denoiser.scalings(t)
        weight = loss_weight(self.weighting, s, denoiser.sigma_data, self.gamma).to(x0.device, torch.float32)
        x_t = per_item(s.alpha, x0) * x0 + per_item(s.sigma, x0) * eps
        output = denoiser.network(x_t, s)
        goal = denoiser.regression_target(x0, eps, s)
        return weight * (output.float() - goal.float()).pow(2).flatten(1).mean(1)
