"""UniPC: the unified predictor-corrector of Zhao et al. (2023), "UniPC: A Unified Predictor-Corrector
Framework for Fast Sampling of Diffusion Models", with data prediction (their Algorithms 2 and 3, as
diffusers' UniPCMultistepScheduler writes them), in the scale-free coordinates of Karras et al. (2022,
eq. 4) so that it runs on any schedule."""

from __future__ import annotations

import math

import torch

from sandbox.sampling import OnGrid, prior, scale_free


def coefficients(rks: list[float], hh: float, variant: str) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """``(R, b, h phi_1, B(h))`` of UniPC's linear system for the ratios ``rks`` (the last one 1).

    ``R[k - 1] = rks^(k - 1)`` and ``b[k - 1] = h phi_{k+1}(h) k! / B(h)`` for ``k = 1..p`` with
    ``hh = -h`` (data prediction), ``h phi_1 = e^{hh} - 1``, ``phi_{k+1} = (phi_k - 1 / k!) / hh``
    (Zhao et al. 2023, eq. 8 and Algorithm 2); ``B(h) = e^{hh} - 1`` for ``bh2``, ``hh`` for ``bh1``.
    """
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1.0
    factorial = 1.0
    b_h = math.expm1(hh) if variant == "bh2" else hh
    R, b = [], []
    for k in range(1, len(rks) + 1):
        R.append([r ** (k - 1) for r in rks])
        b.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    return torch.tensor(R, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), h_phi_1, b_h


class UniPCSampler(OnGrid):
    """UniP-p predicts ``x~_{i+1}``; after the network sees it, UniC-p corrects it, reusing that evaluation.

    Both step from ``lambda~_s = -ln sigma~_s`` over ``h = lambda~_t - lambda~_s``:
    ``x~_t = (sigma~_t / sigma~_s) x~_s - h phi_1 m_s - B(h) sum_k rho_k D_k``, where
    ``D_k = (m_{s_k} - m_s) / r_k`` are divided differences of earlier denoised estimates at
    ``r_k = (lambda~_{s_k} - lambda~_s) / h``; the predictor's ``rho`` solves the system of
    :func:`coefficients` without the new point (``rho = 1/2`` at order 2), the corrector's with the new
    estimate ``m_t`` at ``r = 1`` (``rho = 1/2`` at order 1), which raises the order by one. The order
    ramps up over the first steps and, with ``lower_order_final``, down over the last ones; the step to
    sigma = 0 returns the denoised estimate. One network evaluation per step; ``callback`` reports the
    predicted (uncorrected) state, where the network was called.
    """

    def _step(self, x, sigma_s, sigma_t, lam_s, lam_t, ms, lams, order, m_t=None):
        """One UniP step (``m_t`` None) or UniC step from ``(x~_s, lambda~_s)`` to ``lambda~_t``."""
        h = lam_t - lam_s
        m_s = ms[-1]
        rks, differences = [], []
        for k in range(1, order):
            r = (lams[-(k + 1)] - lam_s) / h
            rks.append(r)
            differences.append((ms[-(k + 1)] - m_s) / r)
        R, b, h_phi_1, b_h = coefficients(rks + [1.0], -h, self.params.variant)
        x_t = (sigma_t / sigma_s) * x - h_phi_1 * m_s
        if m_t is None:  # predictor
            if differences:
                rhos = [0.5] if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1]).tolist()
                x_t = x_t - b_h * sum(rho * d for rho, d in zip(rhos, differences))
            return x_t
        rhos = [0.5] if order == 1 else torch.linalg.solve(R, b).tolist()
        correction = sum((rho * d for rho, d in zip(rhos[:-1], differences)), torch.zeros_like(x))
        return x_t - b_h * (correction + rhos[-1] * (m_t - m_s))

    @torch.no_grad()
    def __call__(self, denoise, noise, schedule, *, generator=None, callback=None):
        p = self.params
        ts = self.times(schedule)
        steps = len(ts) - 1
        alpha, sigma = scale_free(schedule, ts[0])
        x = prior(noise, schedule, ts[0]) / alpha  # x~
        ms: list[torch.Tensor] = []
        lams: list[float] = []
        sigmas: list[float] = []
        x_last, order = x, 1
        for i, (t, t_next) in enumerate(zip(ts[:-1], ts[1:])):
            denoised = self.estimate(denoise, alpha * x, t, i, callback)
            lam = -math.log(sigma)
            if i > 0 and p.corrector:
                x = self._step(x_last, sigmas[-1], sigma, lams[-1], lam, ms, lams, order, m_t=denoised)
            ms, lams, sigmas = (ms + [denoised])[-p.order :], (lams + [lam])[-p.order :], sigmas[-1:] + [sigma]
            order = min(p.order, i + 1, steps - i) if p.lower_order_final else min(p.order, i + 1)
            x_last = x
            alpha, sigma_next = scale_free(schedule, t_next)
            if sigma_next == 0:
                x = denoised
            else:
                x = self._step(x, sigma, sigma_next, lam, -math.log(sigma_next), ms, lams, order)
            sigma = sigma_next
        return alpha * x


def build(params) -> UniPCSampler:
    return UniPCSampler(params)
