"""The schedule protocol: a Gaussian forward process over continuous time.

A schedule defines ``x_t = alpha(t) * x_0 + sigma(t) * eps`` for t in [0, 1]
(notation of Kingma et al. 2021, "Variational Diffusion Models"). Training
draws t with :meth:`Schedule.sample_t`; samplers step along
:meth:`Schedule.timesteps` and read ``alpha``, ``sigma`` there, so any
schedule works with any sampler. A sampler that moves to a noise level off
the grid (Heun's churn, Karras et al. 2022, Algorithm 2) finds its time with
:meth:`Schedule.t_from_log_snr`, the inverse of :meth:`Schedule.log_snr`.
"""

from __future__ import annotations

import torch


class Schedule:
    """Base class of noise schedules. Subclasses implement :meth:`alpha_sigma`."""

    #: number of points of a discrete schedule's grid (DDPM's T), or None
    num_steps: int | None = None

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Signal and noise scales ``(alpha(t), sigma(t))`` at times ``t``."""
        raise NotImplementedError

    def log_snr(self, t: torch.Tensor) -> torch.Tensor:
        """``lambda(t) = log(alpha^2 / sigma^2)``, decreasing in t."""
        alpha, sigma = self.alpha_sigma(t)
        return 2.0 * (torch.log(alpha) - torch.log(sigma))

    def t_from_log_snr(self, lambda_: torch.Tensor) -> torch.Tensor:
        """The time ``t`` in [0, 1] with ``log_snr(t) = lambda_`` (float64, ``lambda_``'s shape).

        The default inverts the monotone :meth:`log_snr` by vectorised
        bisection on [0, 1]: 64 halvings, so the answer is exact to float64
        resolution. A ``lambda_`` above ``log_snr(0)`` gives 0, one below
        ``log_snr(1)`` gives 1; on a flat stretch of ``log_snr`` any time of
        the stretch may come back. Schedules with a closed-form inverse
        override this.
        """
        lambda_ = torch.as_tensor(lambda_, dtype=torch.float64)
        lo = torch.zeros_like(lambda_)
        hi = torch.ones_like(lambda_)
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            above = self.log_snr(mid).to(torch.float64) > lambda_  # log_snr decreases: the root is later
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return hi

    def c_noise(self, t: torch.Tensor) -> torch.Tensor:
        """The conditioning the network sees: ``1000 t`` (DDPM's timestep scale)."""
        return 1000.0 * t

    def timesteps(self, steps: int) -> torch.Tensor:
        """``steps + 1`` descending times from 1 to 0 for a sampler taking ``steps`` steps."""
        return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)

    def sample_t(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Training times, uniform on (0, 1]."""
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=generator.device if generator else None)
        return (1.0 - u).to(device=device, dtype=torch.float32)


class DiscreteSchedule(Schedule):
    """A variance-preserving schedule given by ``T`` betas (Ho et al. 2020).

    Grid point ``n`` (1..T) sits at ``t = n / T`` and keeps its exact value
    ``alpha_bar_n = prod_{i<=n} (1 - beta_i)``, ``alpha = sqrt(alpha_bar)``,
    ``sigma = sqrt(1 - alpha_bar)``; ``t = 0`` is clean data. Between grid
    points the log-SNR is interpolated linearly.
    """

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

    def sample_t(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Grid points ``n / T`` with n uniform on 1..T, as in Algorithm 1 of Ho et al. (2020)."""
        idx = torch.randint(1, self.num_steps + 1, (n,), generator=generator,
                            device=generator.device if generator else None)
        return (idx.to(torch.float32) / self.num_steps).to(device)
