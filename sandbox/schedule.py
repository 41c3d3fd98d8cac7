"""Schedules given by a table of betas; the schedule protocol itself is :class:`sandbox.protocols.Schedule`.

``Schedule`` is re-exported here as the base class to subclass: it supplies
every method but ``alpha_sigma``.
"""

from __future__ import annotations

from typing import Optional

import torch

from sandbox.protocols import Schedule

__all__ = ["DiscreteSchedule", "Schedule"]


class DiscreteSchedule(Schedule):
    """A variance-preserving schedule given by ``T`` betas (Ho et al. 2020).

    Grid point ``n`` (1..T) sits at ``t = n / T`` and keeps its exact value
    ``alpha_bar_n = prod_{i<=n} (1 - beta_i)``, ``alpha = sqrt(alpha_bar)``,
    ``sigma = sqrt(1 - alpha_bar)``; ``t = 0`` is clean data. Between grid
    points the log-SNR is interpolated linearly.
    """

    num_steps: int

    def __init__(self, betas: torch.Tensor):
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must be a 1-D tensor with values in (0, 1)")
        self.betas = betas
        self.num_steps = int(betas.numel())
        self.alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1.0 - betas, 0)])
        self._log_snr = torch.log(self.alpha_bar[1:]) - torch.log1p(-self.alpha_bar[1:])

    def _alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        pos = t.to(torch.float64).clamp(0.0, 1.0) * self.num_steps
        nearest = pos.round()
        on_grid = (pos - nearest).abs() < 1e-6
        # log-SNR at grid points 0..T; point 0 (clean data) is extrapolated from points 1 and 2
        table = torch.cat([(2 * self._log_snr[0] - self._log_snr[1]).reshape(1), self._log_snr])
        lo = pos.floor().long().clamp(0, self.num_steps - 1)
        frac = pos - lo
        lam = table[lo] * (1 - frac) + table[lo + 1] * frac
        return torch.where(on_grid, self.alpha_bar[nearest.long()], torch.sigmoid(lam))

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.as_tensor(t)
        alpha_bar = self._alpha_bar(t.cpu()).to(t.device)
        dtype = t.dtype if t.is_floating_point() else torch.float32
        return alpha_bar.sqrt().to(dtype), (1.0 - alpha_bar).sqrt().to(dtype)

    def timesteps(self, steps: int) -> torch.Tensor:
        """Evenly spaced grid points from T down to 0 ("trailing" spacing of Lin et al. 2024)."""
        steps = min(steps, self.num_steps)
        n = torch.linspace(self.num_steps, 0, steps + 1, dtype=torch.float64).round()
        return n / self.num_steps

    def t_from_log_snr(self, lambda_: torch.Tensor) -> torch.Tensor:
        """Closed-form inverse of the piecewise-linear log-SNR.

        A grid point's log-SNR gives exactly ``n / T``: positions within the
        same 1e-6 of a grid point that :meth:`alpha_sigma` treats as on the
        grid snap to it.
        """
        lambda_ = torch.as_tensor(lambda_, dtype=torch.float64)
        table = torch.cat([(2 * self._log_snr[0] - self._log_snr[1]).reshape(1), self._log_snr])
        k = torch.searchsorted(-table, -lambda_, right=True) - 1  # last k with table[k] >= lambda_
        k = k.clamp(0, self.num_steps - 1)
        frac = ((table[k] - lambda_) / (table[k] - table[k + 1])).clamp(0.0, 1.0)
        pos = k.to(torch.float64) + frac
        nearest = pos.round()
        t = torch.where((pos - nearest).abs() < 1e-6, nearest, pos) / self.num_steps
        return torch.where(lambda_ > table[0], torch.zeros_like(t), t)  # above the table: clean data, t = 0

    def sample_t(
        self, n: int, generator: Optional[torch.Generator] = None, device: Optional[torch.device] = None
    ) -> torch.Tensor:
        """Grid points ``n / T`` with n uniform on 1..T, as in Algorithm 1 of Ho et al. (2020)."""
        idx = torch.randint(
            1, self.num_steps + 1, (n,), generator=generator, device=generator.device if generator else None
        )
        return (idx.to(torch.float32) / self.num_steps).to(device)
