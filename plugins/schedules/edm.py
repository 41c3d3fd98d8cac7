"""The EDM noise levels of Karras et al. (2022), "Elucidating the Design Space
of Diffusion-Based Generative Models": a variance-exploding process
(``alpha = 1``), the sampling grid of eq. 5 and the log-normal training
distribution of table 1.
"""

from __future__ import annotations

import torch

from sandbox.schedule import Schedule

#: the time of the lowest noise level sigma_min. (0, T_MIN] is sigma_min, t = 0 is clean data.
#: A power of two, so a float32 copy of the time still lands exactly on sigma_min.
T_MIN = 2.0**-20


class EDMSchedule(Schedule):
    """``alpha = 1``; ``sigma(t) = (sigma_min^(1/rho) + u (sigma_max^(1/rho) - sigma_min^(1/rho)))^rho``.

    ``u = (t - T_MIN) / (1 - T_MIN)`` runs from 0 at ``t = T_MIN`` (sigma_min)
    to 1 at ``t = 1`` (sigma_max); ``sigma`` is ``sigma_min`` on (0, T_MIN]
    and exactly 0 at ``t = 0``: the one, documented, discontinuity, which is
    where every sampler's last step lands. :meth:`timesteps` puts eq. 5's
    grid on ``u = 1 - i / (n - 1)``.
    """

    def __init__(self, sigma_min: float, sigma_max: float, rho: float, p_mean: float, p_std: float):
        self.sigma_min, self.sigma_max, self.rho = sigma_min, sigma_max, rho
        self.p_mean, self.p_std = p_mean, p_std
        self.root_min, self.root_max = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Noise level at times ``t`` (float64)."""
        t = torch.as_tensor(t).to(torch.float64)
        u = ((t - T_MIN) / (1.0 - T_MIN)).clamp(0.0, 1.0)
        ramp = (self.root_min + u * (self.root_max - self.root_min)) ** self.rho
        ramp = torch.where(t <= T_MIN, torch.full_like(t, self.sigma_min), ramp)
        return torch.where(t <= 0, torch.zeros_like(t), ramp)

    def t_from_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        """The closed-form inverse of :meth:`sigma`, clamped into [T_MIN, 1]; ``sigma = 0`` gives 0."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        u = (sigma.clamp(min=0.0) ** (1.0 / self.rho) - self.root_min) / (self.root_max - self.root_min)
        t = (T_MIN + u * (1.0 - T_MIN)).clamp(T_MIN, 1.0)
        return torch.where(sigma <= 0, torch.zeros_like(t), t)

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.as_tensor(t)
        dtype = t.dtype if t.is_floating_point() else torch.float32
        sigma = self.sigma(t.cpu()).to(t.device, dtype)
        return torch.ones_like(sigma), sigma

    def t_from_log_snr(self, lambda_: torch.Tensor) -> torch.Tensor:
        """Closed form: ``sigma = exp(-lambda_ / 2)``, then :meth:`t_from_sigma`."""
        return self.t_from_sigma(torch.exp(-0.5 * torch.as_tensor(lambda_, dtype=torch.float64)))

    def timesteps(self, steps: int) -> torch.Tensor:
        """``steps + 1`` times: eq. 5's ``steps`` noise levels from sigma_max to sigma_min, then 0.

        ``sigma_i = (sigma_max^(1/rho) + i / (n - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``
        for ``i < n = steps`` sits at ``t_i = T_MIN + (1 - T_MIN)(1 - i / (n - 1))``; one step
        goes straight from sigma_max to 0.
        """
        if steps < 2:
            return torch.tensor([1.0, 0.0], dtype=torch.float64)
        u = 1.0 - torch.arange(steps, dtype=torch.float64) / (steps - 1)
        return torch.cat([T_MIN + u * (1.0 - T_MIN), torch.zeros(1, dtype=torch.float64)])

    def sample_t(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """``ln(sigma) ~ N(p_mean, p_std^2)`` (table 1), mapped to t; sigmas beyond the range clamp to its ends."""
        z = torch.randn(n, generator=generator, dtype=torch.float64, device=generator.device if generator else None)
        t = self.t_from_sigma(torch.exp(self.p_mean + self.p_std * z.cpu()))
        return t.to(device=device, dtype=torch.float32)


def build(params) -> EDMSchedule:
    return EDMSchedule(params.sigma_min, params.sigma_max, params.rho, params.p_mean, params.p_std)
