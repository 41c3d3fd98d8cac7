"""The training objective: a weighted MSE on the prediction target.

``uniform`` is DDPM's "L_simple" (Ho et al. 2020, eq. 14) on whatever the
network predicts. The other weightings are defined on the x0 error and
converted to the target's own error with
:meth:`sandbox.targets.Parameterization.x0_error_scale`:

* ``min_snr``: ``w_x0 = min(SNR, gamma)`` (Hang et al. 2023), which is
  ``min(SNR, gamma) / SNR`` for epsilon and ``min(SNR, gamma) / (SNR + 1)`` for v;
* ``edm``: ``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2``
  (Karras et al. 2022, table 1), which is 1 on the ``edm`` target.
"""

from __future__ import annotations

import torch

from sandbox.targets import Parameterization, expand

WEIGHTINGS = ("uniform", "min_snr", "edm")


class DiffusionLoss:
    """``E_{t, eps} w(t) || F(c_in x_t, c_noise(t)) - target ||^2`` per example."""

    def __init__(self, schedule, target: str | Parameterization = "epsilon", weighting: str = "uniform",
                 min_snr_gamma: float = 5.0):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown loss weighting {weighting!r}; expected one of {', '.join(WEIGHTINGS)}")
        self.schedule = schedule
        self.param = target if isinstance(target, Parameterization) else Parameterization(target)
        self.weighting = weighting
        self.gamma = min_snr_gamma

    def weight(self, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Per-example weight on the target's MSE."""
        if self.weighting == "uniform":
            return torch.ones_like(alpha)
        snr = (alpha / sigma) ** 2
        if self.weighting == "min_snr":
            w_x0 = snr.clamp(max=self.gamma)
        else:
            s2, d2 = (sigma / alpha) ** 2, self.param.sigma_data**2
            w_x0 = (s2 + d2) / (s2 * d2)
        return w_x0 * self.param.x0_error_scale(alpha, sigma)

    def __call__(self, net, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n = x0.shape[0]
        if generator is None:
            t = self.schedule.sample_t(n, device=x0.device)
            eps = torch.randn_like(x0)
        else:  # a seeded CPU generator: the same draws on every device (validation)
            t = self.schedule.sample_t(n, generator).to(x0.device)
            eps = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
        alpha, sigma = self.schedule.alpha_sigma(t)
        weight = self.weight(alpha.double(), sigma.double()).to(x0.device, torch.float32)
        alpha, sigma = expand(alpha, x0), expand(sigma, x0)
        x_t = alpha * x0 + sigma * eps
        if getattr(net, "is_analytic", False):  # closed-form denoiser: its exact x0 in the target's output form
            output = self.param.output_for(net.exact_x0(x_t, alpha, sigma), x_t, alpha, sigma)
        else:
            output = net(self.param.c_in(alpha, sigma) * x_t, self.schedule.c_noise(t))
        goal = self.param.target_of(x0, eps, alpha, sigma)
        return weight * (output.float() - goal.float()).pow(2).flatten(1).mean(1)
