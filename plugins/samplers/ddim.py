"""DDIM: denoising diffusion implicit models (Song et al. 2021, eq. 12)."""

from __future__ import annotations

import torch

from sandbox.sampling import OnGrid, prior, scalars, step_noise, transition


class DDIMSampler(OnGrid):
    """``x_s = alpha_s x_0 + sqrt(sigma_s^2 - c^2) eps + c z`` with ``c = eta * sqrt(beta-tilde)``.

    ``eta = 0`` is the deterministic DDIM ODE step; ``eta = 1`` draws from
    DDPM's posterior ``q(x_s | x_t, x_0)`` with variance beta-tilde. One network
    evaluation per step of the time grid (``params.grid``).
    """

    @torch.no_grad()
    def __call__(self, denoise, noise, schedule, *, generator=None, callback=None):
        ts = self.times(schedule)
        x = prior(noise, schedule, ts[0])
        for i, (t, s) in enumerate(zip(ts[:-1], ts[1:])):
            x0 = denoise(x, t)
            if self.params.clip_x0:
                x0 = x0.clamp(-1.0, 1.0)
            alpha_t, sigma_t = scalars(schedule, t)
            alpha_s, sigma_s = scalars(schedule, s)
            eps = (x - alpha_t * x0) / sigma_t
            _, _, var_small = transition(schedule, t, s)
            c2 = min(self.params.eta**2 * var_small, sigma_s**2)
            x_next = alpha_s * x0 + (sigma_s**2 - c2) ** 0.5 * eps
            if c2 > 0:
                x_next = x_next + c2**0.5 * step_noise(x, generator, schedule, t, s)
            if callback is not None:
                callback({"x": x, "i": i, "t": t, "denoised": x0})
            x = x_next
        return x


def build(params) -> DDIMSampler:
    return DDIMSampler(params)
