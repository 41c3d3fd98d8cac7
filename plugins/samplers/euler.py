"""Euler steps on the probability-flow ODE: Algorithm 1 of Karras et al. (2022)
without its second-order correction, in the scale-free coordinates of eq. 4."""

from __future__ import annotations

import torch

from sandbox.sampling import OnGrid, prior, scale_free


class EulerSampler(OnGrid):
    """``x~_{i+1} = x~_i + (sigma~_{i+1} - sigma~_i) d_i`` with ``d_i = (x~_i - D(x_i; t_i)) / sigma~_i``.

    Written as ``x~_{i+1} = r x~_i + (1 - r) D`` with ``r = sigma~_{i+1} / sigma~_i``,
    the same step without cancellation when sigma~ is large. On any schedule it
    is DDIM with eta = 0 (Song et al. 2021; Karras et al. 2022, section 4).
    """

    @torch.no_grad()
    def __call__(self, denoise, noise, schedule, *, generator=None, callback=None):
        ts = self.times(schedule)
        alpha, sigma = scale_free(schedule, ts[0])
        x = prior(noise, schedule, ts[0]) / alpha  # x~
        for i, (t, t_next) in enumerate(zip(ts[:-1], ts[1:])):
            denoised = self.estimate(denoise, alpha * x, t, i, callback)
            alpha, sigma_next = scale_free(schedule, t_next)
            ratio = sigma_next / sigma
            x = ratio * x + (1.0 - ratio) * denoised
            sigma = sigma_next
        return alpha * x


def build(params) -> EulerSampler:
    return EulerSampler(params)
