"""Variance-preserving schedule with a linear log-SNR (Kingma et al. 2021, "Variational Diffusion Models").

``lambda(t) = lambda_max + t (lambda_min - lambda_max)`` and, since the
process preserves variance (``alpha^2 + sigma^2 = 1``),
``alpha^2 = sigmoid(lambda)`` and ``sigma^2 = sigmoid(-lambda)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sandbox import Schedule


class LogLinearSchedule(Schedule):
    """``lambda(t)`` falls linearly from ``lambda_max`` at t = 0 to ``lambda_min`` at t = 1."""

    def __init__(self, lambda_max: float = 10.0, lambda_min: float = -10.0):
        self.lambda_max = float(lambda_max)
        self.lambda_min = float(lambda_min)

    def log_snr(self, t: torch.Tensor) -> torch.Tensor:
        """``lambda(t) = lambda_max + t (lambda_min - lambda_max)``, exactly."""
        t = torch.as_tensor(t)
        t = t if t.is_floating_point() else t.to(torch.float32)
        return self.lambda_max + t * (self.lambda_min - self.lambda_max)

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``alpha = sqrt(sigmoid(lambda))``, ``sigma = sqrt(sigmoid(-lambda))``, through log-sigmoid for accuracy."""
        lambda_ = self.log_snr(t)
        return torch.exp(0.5 * F.logsigmoid(lambda_)), torch.exp(0.5 * F.logsigmoid(-lambda_))

    def t_from_log_snr(self, lambda_: torch.Tensor) -> torch.Tensor:
        """The closed-form inverse ``t = (lambda_max - lambda) / (lambda_max - lambda_min)``, clamped to [0, 1]."""
        lambda_ = torch.as_tensor(lambda_, dtype=torch.float64)
        return ((self.lambda_max - lambda_) / (self.lambda_max - self.lambda_min)).clamp(0.0, 1.0)


def build(params) -> LogLinearSchedule:
    return LogLinearSchedule(params.lambda_max, params.lambda_min)
