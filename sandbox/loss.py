"""The training objective: MSE on the prediction target (Ho et al. 2020, eq. 14, "L_simple")."""

from __future__ import annotations

import torch

from sandbox.targets import expand, training_target


class DiffusionLoss:
    """``E_{t, eps} || F(alpha_t x_0 + sigma_t eps, c_noise(t)) - target ||^2`` per example."""

    def __init__(self, schedule, target: str = "epsilon"):
        self.schedule = schedule
        self.target = target

    def __call__(self, net, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n = x0.shape[0]
        if generator is None:
            t = self.schedule.sample_t(n, device=x0.device)
            eps = torch.randn_like(x0)
        else:  # a seeded CPU generator: the same draws on every device (validation)
            t = self.schedule.sample_t(n, generator).to(x0.device)
            eps = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
        alpha, sigma = self.schedule.alpha_sigma(t)
        alpha, sigma = expand(alpha, x0), expand(sigma, x0)
        x_t = alpha * x0 + sigma * eps
        output = net(x_t, self.schedule.c_noise(t))
        goal = training_target(self.target, x0, eps, alpha, sigma)
        return (output.float() - goal.float()).pow(2).flatten(1).mean(1)
