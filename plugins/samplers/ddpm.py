"""Ancestral sampling: Algorithm 2 of Ho et al. (2020) on any schedule and time grid."""

from __future__ import annotations

import torch

from sandbox.sampling import OnGrid, forward_variance, prior, step_noise, transition


class DDPMSampler(OnGrid):
    """``x_s ~ N(mu(x_t, x_0), var)`` from t = 1 down to 0.

    The posterior mean is written through the denoised estimate ``x_0``
    (Kingma et al. 2021, eq. 33), which for an epsilon network is exactly
    ``(x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t)`` of
    Algorithm 2. ``variance="large"`` uses ``sigma_t^2 = beta_t``,
    ``"small"`` uses ``beta-tilde``; the last step adds no noise.
    """

    def num_steps(self, schedule) -> int:
        """``steps``, or every point of a discrete schedule's grid (1,000 for a continuous one)."""
        return self.params.steps or schedule.num_steps or 1000

    @torch.no_grad()
    def __call__(self, denoise, noise, schedule, *, generator=None, callback=None):
        ts = self.times(schedule)
        x = prior(noise, schedule, ts[0])
        for i, (t, s) in enumerate(zip(ts[:-1], ts[1:])):
            x0 = denoise(x, t)
            if self.params.clip_x0:
                x0 = x0.clamp(-1.0, 1.0)
            coef_x0, coef_xt, var_small = transition(schedule, t, s)
            var = var_small if self.params.variance == "small" else forward_variance(schedule, t, s)
            x_next = coef_x0 * x0 + coef_xt * x
            if i < len(ts) - 2:
                x_next = x_next + var**0.5 * step_noise(x, generator, schedule, t, s)
            if callback is not None:
                callback({"x": x, "i": i, "t": t, "denoised": x0})
            x = x_next
        return x


def build(params) -> DDPMSampler:
    return DDPMSampler(params)
