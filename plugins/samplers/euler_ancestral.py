"""Euler ancestral sampling: an Euler step down to ``sigma_down``, then fresh noise back up to the next
noise level, as k-diffusion's ``sample_euler_ancestral`` (and diffusers' EulerAncestralDiscreteScheduler),
in the scale-free coordinates of Karras et al. (2022, eq. 4) so that it runs on any schedule."""

from __future__ import annotations

import torch

from sandbox.sampling import OnGrid, prior, scale_free, step_noise


def ancestral_step(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """``(sigma_down, sigma_up)`` with ``sigma_down^2 + sigma_up^2 = sigma_next^2``.

    ``sigma_up = min(sigma_next, eta sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2))``: with
    ``eta = 1``, the variance of DDPM's posterior ``q(x_s | x_t, x_0)`` in the variance-exploding picture.
    """
    if not eta:
        return sigma_next, 0.0
    sigma_up = min(sigma_next, eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
    return (sigma_next**2 - sigma_up**2) ** 0.5, sigma_up


class EulerAncestralSampler(OnGrid):
    """``x~' = x~ + (sigma~_down - sigma~) (x~ - D) / sigma~ + s_noise sigma~_up z``, one evaluation per step.

    Written as ``r x~ + (1 - r) D`` with ``r = sigma~_down / sigma~``; no noise
    is drawn on the last step, to ``sigma = 0``. ``eta = 0`` is the Euler sampler.
    """

    @torch.no_grad()
    def __call__(self, denoise, noise, schedule, *, generator=None, callback=None):
        p = self.params
        ts = self.times(schedule)
        alpha, sigma = scale_free(schedule, ts[0])
        x = prior(noise, schedule, ts[0]) / alpha  # x~
        for i, (t, t_next) in enumerate(zip(ts[:-1], ts[1:])):
            denoised = self.estimate(denoise, alpha * x, t, i, callback)
            alpha, sigma_next = scale_free(schedule, t_next)
            sigma_down, sigma_up = ancestral_step(sigma, sigma_next, p.eta)
            ratio = sigma_down / sigma
            x = ratio * x + (1.0 - ratio) * denoised
            if sigma_next > 0 and sigma_up > 0:
                x = x + p.s_noise * sigma_up * step_noise(x, generator, schedule, t, t_next)
            sigma = sigma_next
        return alpha * x


def build(params) -> EulerAncestralSampler:
    return EulerAncestralSampler(params)
