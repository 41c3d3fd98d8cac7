"""Orders of convergence of the ODE samplers, against the exact probability-flow ODE of a Gaussian.

For data N(mu, s^2) the exact denoiser is ``D(x~; sigma~) = mu + s^2 / (s^2 + sigma~^2) (x~ - mu)`` and
the probability-flow ODE ``dx~/dsigma~ = (x~ - D) / sigma~`` (Karras et al. 2022, eq. 4 in scale-free
coordinates) has the solution ``x~(sigma~) = mu + (x~_T - mu) sqrt(s^2 + sigma~^2) / sqrt(s^2 + sigma~_T^2)``.
Every sampler ends with one first-order step from the last nonzero noise level sigma~_L to 0, which
with the exact denoiser returns ``D(x~_L; sigma~_L)``; the reference is therefore ``D`` applied to the
exact ``x~(sigma~_L)``, so the error measured is the ODE solver's alone.
"""

from __future__ import annotations

import math

import pytest
import torch

from sandbox.registry import get_registry
from sandbox.sampling import scale_free
from sandbox.testing import build_component as build

REGISTRY = get_registry()
MU, S, X_T = 1.0, 0.5, 1.7  # data mean and std; the fixed standard-normal draw the ODE starts from
STEPS = (16, 32, 64, 128)


def denoiser(schedule):
    def denoise(x, t):
        alpha, sigma = scale_free(schedule, float(t))
        return MU + S**2 / (S**2 + sigma**2) * (x / alpha - MU)

    return denoise


def error(schedule, smp) -> float:
    times = smp.times(schedule) if hasattr(smp, "times") else schedule.timesteps(smp.num_steps(schedule)).tolist()
    _alpha_T, sigma_T = scale_free(schedule, times[0])
    _, sigma_L = scale_free(schedule, times[-2])
    x_T = X_T * (1.0 + sigma_T**2) ** 0.5  # x~_T of the prior: noise * sqrt(alpha^2 + sigma^2) / alpha
    x_L = MU + (x_T - MU) * math.sqrt(S**2 + sigma_L**2) / math.sqrt(S**2 + sigma_T**2)
    reference = MU + S**2 / (S**2 + sigma_L**2) * (x_L - MU)
    out = smp(denoiser(schedule), torch.tensor([X_T], dtype=torch.float64), schedule)
    return abs(float(out) - reference)


def order(schedule_name, sampler_name, **params) -> float:
    """Least-squares slope of -log(error) against log(N)."""
    schedule = build("schedule", schedule_name)
    errors = [error(schedule, build("sampler", sampler_name, steps=n, **params)) for n in STEPS]
    x = torch.log(torch.tensor(STEPS, dtype=torch.float64))
    y = torch.log(torch.tensor(errors, dtype=torch.float64))
    x = x - x.mean()
    return -float((x * (y - y.mean())).sum() / (x * x).sum())


@pytest.mark.parametrize(
    "sampler_name, params, low, high",
    [
        ("euler", {}, 0.7, 1.3),
        ("ddim", {"eta": 0.0}, 0.7, 1.3),
        ("heun", {}, 1.6, 2.6),
        ("heun", {"grid": "uniform_log_snr"}, 1.6, 2.6),
        ("dpmpp_2m", {}, 1.6, 2.6),
        ("dpmpp_2m_sde", {"eta": 0.0}, 1.6, 2.6),
        ("dpmpp_3m", {"grid": "uniform_log_snr"}, 2.7, 4.5),
        ("dpmpp_3m", {"grid": "uniform_log_snr", "halved_d2": True}, 1.6, 2.6),
        ("unipc", {"order": 1}, 1.6, 2.6),
        ("unipc", {"order": 2}, 2.6, 3.6),
        ("unipc", {"order": 3}, 3.4, 4.8),
        ("unipc", {"order": 3, "corrector": False}, 2.7, 4.5),
    ],
)
def test_order_on_the_edm_schedule(sampler_name, params, low, high):
    """Euler and DDIM (eta = 0) are first order; Heun and DPM-Solver++(2M) second order; DPM-Solver++(3M)
    third order (second with the halved second difference of k-diffusion and diffusers); UniPC-p with its
    corrector p + 1, without it p (Zhao et al. 2023, Theorem 3.1). 3M's slope is fitted on the grid uniform
    in log-SNR, where its step ratios are constant; on eq. 5's grid its error is still in the pre-asymptotic
    range at 16 to 128 steps (slope 3.5 with the factor 2).

    The edm schedule's steps (eq. 5) vary smoothly with N, so the asymptotic order shows already at
    16 to 128 steps. The order of DPM-Solver++(2M) is observable on this schedule only: on the VP
    schedules its grid is uniform in t, whose first step jumps in log-SNR from sigma~ = 2e4 (3e4 for
    sigmoid) to about 16, and the multistep ratio r = h_{i-1} / h_i that follows is far from 1; its
    error there stays small (1e-3 at 16 steps) but the slope is 1.2 (cosine) and 0.6 (sigmoid).
    """
    assert low <= order("edm", sampler_name, **params) <= high


def test_heun_is_second_order_on_a_vp_schedule():
    """Heun's default log-SNR spacing keeps second order on the cosine schedule (sigma~ from 2e4 to 0.07)."""
    assert 1.6 <= order("cosine", "heun") <= 2.6
