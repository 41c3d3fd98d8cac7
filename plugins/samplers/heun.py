"""Heun's second-order sampler with optional churn: Algorithm 2 of Karras et al.
(2022), in the scale-free coordinates of eq. 4 so that it runs on any schedule."""

from __future__ import annotations

import math

import torch

from sandbox.sampling import OnGrid, prior, randn_like, scalars, scale_free, t_from_sigma_tilde


class HeunSampler(OnGrid):
    """Euler predictor and trapezoidal corrector on ``dx~/dsigma~ = (x~ - D) / sigma~``.

    Each step first raises the noise level to ``sigma~_hat = (1 + gamma) sigma~_i``
    with ``gamma = min(s_churn / N, sqrt(2) - 1)`` where
    ``s_tmin <= sigma~_i <= s_tmax`` (adding ``s_noise`` scaled fresh noise), then
    steps to ``sigma~_{i+1}``; the last step, to ``sigma = 0``, is a plain
    Euler step. ``sigma~_hat`` is mapped back to a time with
    :meth:`Schedule.t_from_log_snr`, so the network is called at a legitimate
    t; above the schedule's end (t = 1) the churn is capped. Network
    evaluations: ``2 N - 1``.

    The steps follow the time grid ``params.grid``; the default is Algorithm 2's
    own, eq. 5 with ``rho = 7`` (the ``karras`` grid: on the ``edm`` schedule
    these are its timesteps). A trapezoidal step is accurate only where ``d``
    is nearly linear in ``sigma~``: on a VP schedule whose ``sigma~(1)`` is huge
    (2e4 on ``cosine``), eq. 5 spends its first steps far above the data's
    scale, and ``uniform_log_snr`` is the better grid at few steps.
    """

    def nfe(self, schedule) -> int:
        """Two evaluations per step, one for a final step that lands on sigma = 0."""
        return sum(2 if scalars(schedule, t)[1] > 0 else 1 for t in self.times(schedule)[1:])

    def _gamma(self, sigma: float, steps: int) -> float:
        p = self.params
        if p.s_churn <= 0 or sigma < p.s_tmin or (p.s_tmax is not None and sigma > p.s_tmax):
            return 0.0
        return min(p.s_churn / steps, math.sqrt(2.0) - 1.0)

    def _denoise(self, denoise, x, t, alpha):
        denoised = denoise(alpha * x, t)
        return denoised.clamp(-1.0, 1.0) if self.params.clip_x0 else denoised

    @torch.no_grad()
    def __call__(self, denoise, noise, schedule, *, generator=None, callback=None):
        ts = self.times(schedule)
        steps = len(ts) - 1
        alpha, sigma = scale_free(schedule, ts[0])
        x = prior(noise, schedule, ts[0]) / alpha  # x~
        for i, (t, t_next) in enumerate(zip(ts[:-1], ts[1:])):
            gamma = self._gamma(sigma, steps)
            if gamma > 0:
                t_hat = t_from_sigma_tilde(schedule, sigma * (1.0 + gamma))
                alpha_hat, sigma_hat = scale_free(schedule, t_hat)
                if sigma_hat > sigma:
                    x = x + self.params.s_noise * (sigma_hat**2 - sigma**2) ** 0.5 * randn_like(x, generator)
                    t, alpha, sigma = t_hat, alpha_hat, sigma_hat
            denoised = self._denoise(denoise, x, t, alpha)
            if callback is not None:
                callback({"x": alpha * x, "i": i, "t": t, "denoised": denoised})
            d = (x - denoised) / sigma
            alpha_next, sigma_next = scale_free(schedule, t_next)
            ratio = sigma_next / sigma
            x_euler = ratio * x + (1.0 - ratio) * denoised  # = x + (sigma_next - sigma) d
            if sigma_next > 0:
                d_next = (x_euler - self._denoise(denoise, x_euler, t_next, alpha_next)) / sigma_next
                x = x_euler + 0.5 * (sigma_next - sigma) * (d_next - d)  # = x + (sigma_next - sigma)(d + d_next) / 2
            else:
                x = x_euler
            alpha, sigma = alpha_next, sigma_next
        return alpha * x


def build(params) -> HeunSampler:
    return HeunSampler(params)
