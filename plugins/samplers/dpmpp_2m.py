"""DPM-Solver++(2M): Algorithm 2 of Lu et al. (2022), "DPM-Solver++: Fast Solver
for Guided Sampling of Diffusion Probabilistic Models", with data prediction,
in the scale-free coordinates of Karras et al. (2022), as k-diffusion's
``sample_dpmpp_2m``."""

from __future__ import annotations

import math

import torch

from sandbox.sampling import OnGrid, prior, scale_free


class DPMPP2MSampler(OnGrid):
    """Multistep in ``lambda~ = -ln sigma~`` (half the log-SNR), with ``h_i = lambda~_{i+1} - lambda~_i``:

    ``x~_{i+1} = (sigma~_{i+1} / sigma~_i) x~_i - expm1(-h_i) D_i`` where
    ``D_i = (1 + 1 / (2 r_i)) x0_i - x0_{i-1} / (2 r_i)``, ``r_i = h_{i-1} / h_i``.
    The first step uses ``D_0 = x0_0`` (first order, DPM-Solver++(1) = DDIM);
    the last step, to ``sigma = 0``, returns the denoised estimate, as
    k-diffusion does. One network evaluation per step.
    """

    @torch.no_grad()
    def __call__(self, denoise, noise, schedule, *, generator=None, callback=None):
        ts = self.times(schedule)
        alpha, sigma = scale_free(schedule, ts[0])
        x = prior(noise, schedule, ts[0]) / alpha  # x~
        old_denoised, h_last = None, None
        for i, (t, t_next) in enumerate(zip(ts[:-1], ts[1:])):
            denoised = self.estimate(denoise, alpha * x, t, i, callback)
            alpha, sigma_next = scale_free(schedule, t_next)
            if sigma_next == 0:
                x = denoised
            else:
                h = math.log(sigma / sigma_next)
                d = denoised
                if old_denoised is not None and h_last is not None:
                    r = h_last / h
                    d = (1.0 + 1.0 / (2.0 * r)) * denoised - (1.0 / (2.0 * r)) * old_denoised
                x = (sigma_next / sigma) * x - math.expm1(-h) * d
                h_last = h
            old_denoised, sigma = denoised, sigma_next
        return alpha * x


def build(params) -> DPMPP2MSampler:
    return DPMPP2MSampler(params)
