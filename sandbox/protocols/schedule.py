"""The schedule contract: a Gaussian forward process over t in [0, 1], with defaults a subclass inherits."""

from __future__ import annotations

from typing import Optional, Protocol, runtime_checkable

import torch


@runtime_checkable
class Schedule(Protocol):
    """A Gaussian forward process ``x_t = alpha(t) x_0 + sigma(t) eps`` over t in [0, 1].

    Notation of Kingma et al. (2021), "Variational Diffusion Models"; t = 0
    is clean data, t = 1 (nearly) pure noise. Only :meth:`alpha_sigma` is
    required: subclass :class:`Schedule` explicitly to inherit the defaults
    below (the base class :class:`sandbox.schedule.Schedule` is this one).
    Training draws t with :meth:`sample_t`; every sampler steps on
    :meth:`timesteps` and reads ``alpha``, ``sigma`` there, so any schedule
    works with any sampler. A sampler that moves to a noise level off the
    grid (Heun's churn, Karras et al. 2022, Algorithm 2) finds its time with
    :meth:`t_from_log_snr`.
    """

    #: number of points of a discrete schedule's grid (DDPM's T), or None for a continuous one
    num_steps: Optional[int] = None

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Signal and noise scales ``(alpha(t), sigma(t))``, each of ``t``'s shape, dtype and device."""
        ...

    def log_snr(self, t: torch.Tensor) -> torch.Tensor:
        """``lambda(t) = log(alpha^2 / sigma^2)``, non-increasing in t."""
        alpha, sigma = self.alpha_sigma(t)
        return 2.0 * (torch.log(alpha) - torch.log(sigma))

    def t_from_log_snr(self, lambda_: torch.Tensor) -> torch.Tensor:
        """The time ``t`` in [0, 1] with ``log_snr(t) = lambda_`` (float64, ``lambda_``'s shape).

        The default inverts the monotone :meth:`log_snr` by vectorised
        bisection on [0, 1]: 64 halvings, exact to float64 resolution. A
        ``lambda_`` above ``log_snr(0)`` gives 0, one below ``log_snr(1)``
        gives 1; on a flat stretch any time of the stretch may come back.
        """
        lambda_ = torch.as_tensor(lambda_, dtype=torch.float64)
        lo, hi = torch.zeros_like(lambda_), torch.ones_like(lambda_)
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            above = self.log_snr(mid).to(torch.float64) > lambda_  # log_snr decreases: the root is later
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return hi

    def c_noise(self, t: torch.Tensor) -> torch.Tensor:
        """The noise-level input of the network for targets that use the schedule's: ``1000 t`` (DDPM's scale)."""
        return 1000.0 * t

    def timesteps(self, steps: int) -> torch.Tensor:
        """At most ``steps + 1`` strictly descending float64 times from 1 to exactly 0."""
        return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)

    def sample_t(
        self, n: int, generator: Optional[torch.Generator] = None, device: Optional[torch.device] = None
    ) -> torch.Tensor:
        """``n`` training times in (0, 1] (float32 on ``device``), drawn with ``generator``: uniform by default."""
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=generator.device if generator else None)
        return (1.0 - u).to(device=device, dtype=torch.float32)
