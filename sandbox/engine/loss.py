"""The training objective: a weighted MSE on the prediction target (EDM's ``training/loss.py`` in one class).

For ``x_t = alpha x_0 + sigma eps`` with ``t`` from the schedule's
``sample_t``, the loss of one example is ``w || F(c_in x_t, c_noise) - F* ||^2``
with the scalings and ``F*`` of :class:`sandbox.engine.precond.Preconditioned` and
``w = lambda c_out^2`` from the weighting table (:data:`sandbox.targets.WEIGHTINGS`).
"""

from __future__ import annotations

from typing import Optional

import torch

from sandbox.engine.precond import Preconditioned, per_item
from sandbox.targets import WEIGHTINGS, loss_weight


class DiffusionLoss:
    """``E_{t, eps} w(t) || F(c_in x_t, c_noise) - F* ||^2``, one value per example."""

    def __init__(self, weighting: str = "uniform", min_snr_gamma: float = 5.0):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown loss weighting {weighting!r}; expected one of {', '.join(WEIGHTINGS)}")
        self.weighting, self.gamma = weighting, min_snr_gamma

    def __call__(
        self,
        denoiser: Preconditioned,
        x0: torch.Tensor,
        generator: Optional[torch.Generator] = None,
        *,
        within: Optional[tuple[int, int]] = None,
        labels: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Per-example losses; ``generator`` (a seeded CPU generator) gives the same draws on every device.

        ``within = (start, total)`` says that ``x0`` is rows ``start ..`` of a batch of ``total``, split
        over data-parallel processes: ``t`` and ``eps`` are drawn for the whole batch and the same rows
        kept, so the processes together make exactly the draws of a single process. ``labels``: the items'
        classes, for a class-conditional network.
        """
        schedule, n = denoiser.schedule, x0.shape[0]
        start, total = within if within is not None else (0, n)
        rows, shape = slice(start, start + n), (total, *x0.shape[1:])
        if generator is None:
            t = schedule.sample_t(total, device=x0.device)[rows]
            eps = torch.randn(shape, device=x0.device, dtype=x0.dtype)[rows]
        else:
            t = schedule.sample_t(total, generator)[rows].to(x0.device)
            eps = torch.randn(shape, generator=generator)[rows].to(x0.device, x0.dtype)
        if eps.stride() != x0.stride():  # x0 channels-last: the same values in x0's layout
            eps = torch.empty_like(x0).copy_(eps)
        s = denoiser.scalings(t)
        weight = loss_weight(self.weighting, s, denoiser.sigma_data, self.gamma).to(x0.device, torch.float32)
        x_t = per_item(s.alpha, x0) * x0 + per_item(s.sigma, x0) * eps
        output = denoiser.network(x_t, s) if labels is None else denoiser.network(x_t, s, labels)
        goal = denoiser.regression_target(x0, eps, s)
        return weight * (output.float() - goal.float()).pow(2).flatten(1).mean(1)
