"""Schedules against their published closed forms, and the schedule contract for every registered one."""

from __future__ import annotations

import math

import pytest
import torch

from sandbox.registry import get_registry
from sandbox.schedule import Schedule
from sandbox.testing import build_component

REGISTRY = get_registry()


def build(name, **overrides):
    return build_component("schedule", name, **overrides)


def alpha_bar_at(schedule, n, T):
    alpha, _ = schedule.alpha_sigma(torch.as_tensor(n, dtype=torch.float64) / T)
    return alpha.double() ** 2


def test_linear_matches_ddpm_betas_and_product():
    """Ho et al. (2020): beta_n linear from 1e-4 to 0.02 over T = 1000; alpha_bar_n = prod (1 - beta_i)."""
    schedule = build("linear")
    T = 1000
    betas = [1e-4 + (0.02 - 1e-4) * i / (T - 1) for i in range(T)]
    prod, expected = 1.0, []
    for beta in betas:
        prod *= 1.0 - beta
        expected.append(prod)
    n = torch.arange(1, T + 1)
    got = alpha_bar_at(schedule, n, T)
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-9, atol=0)
    # published end point: sqrt(alpha_bar_T) = 0.00635 (signal left at t = T in DDPM's schedule)
    assert math.sqrt(expected[-1]) == pytest.approx(0.006353, rel=1e-3)
    assert float(got[-1]) == pytest.approx(4.0358e-5, rel=1e-3)


def test_cosine_matches_nichol_dhariwal_closed_form():
    """alpha_bar(t) = f(t) / f(0), f(t) = cos^2(((t + s) / (1 + s)) pi / 2), s = 0.008 (eq. 17)."""
    schedule = build("cosine")
    T, s = 1000, 0.008
    f = lambda t: math.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    for n in (1, 10, 250, 500, 750, 990, 999):
        assert float(alpha_bar_at(schedule, n, T)) == pytest.approx(f(n / T) / f(0), rel=1e-9)
    # the last beta is clipped at 0.999, as in the paper
    assert float(schedule.betas[-1]) == pytest.approx(0.999)
    assert float(alpha_bar_at(schedule, T, T)) == pytest.approx(0.001 * f(0.999) / f(0), rel=1e-6)


def test_discrete_schedule_keeps_exact_values_on_grid_and_is_monotone_between():
    schedule = build("linear", num_steps=10)
    fine = torch.linspace(0, 1, 1001, dtype=torch.float64)
    lam = schedule.log_snr(fine)
    assert bool((lam[1:] < lam[:-1]).all()), "log-SNR must decrease strictly in t"
    assert float(alpha_bar_at(schedule, 0, 10)) == 1.0


@pytest.mark.parametrize("name", REGISTRY.names("schedule"))
def test_schedule_contract(name):
    schedule = REGISTRY.get("schedule", name).build()
    t = torch.linspace(0.001, 1.0, 257)
    alpha, sigma = schedule.alpha_sigma(t)
    assert alpha.shape == t.shape and sigma.shape == t.shape
    assert bool(torch.isfinite(alpha).all() and torch.isfinite(sigma).all())
    assert bool((alpha >= 0).all() and (sigma > 0).all())
    lam = schedule.log_snr(t)
    assert bool((lam[1:] <= lam[:-1] + 1e-6).all()), "log-SNR must not increase with t"
    for steps in (1, 7, 50):
        grid = schedule.timesteps(steps)
        assert grid.ndim == 1 and 2 <= len(grid) <= steps + 1
        assert float(grid[0]) == pytest.approx(1.0) and float(grid[-1]) == 0.0
        assert bool((grid[1:] < grid[:-1]).all())
    draws = schedule.sample_t(4096, torch.Generator().manual_seed(0))
    assert draws.shape == (4096,)
    assert bool((draws > 0).all() and (draws <= 1).all())
    assert len(torch.unique(draws)) > 1  # where the draws concentrate is each schedule's own choice
    assert schedule.c_noise(t).shape == t.shape


@pytest.mark.parametrize("name", REGISTRY.names("schedule"))
def test_t_from_log_snr_inverts_log_snr(name):
    """Every schedule's inverse, closed form or not, agrees with the default bisection."""
    schedule = REGISTRY.get("schedule", name).build()
    t = torch.linspace(0.0123, 0.9877, 97, dtype=torch.float64)
    lam = schedule.log_snr(t).double()
    assert torch.allclose(schedule.t_from_log_snr(lam), t, rtol=0, atol=1e-8)
    assert torch.allclose(Schedule.t_from_log_snr(schedule, lam), t, rtol=0, atol=1e-8)
    lam_out = torch.tensor([1e4, -1e4], dtype=torch.float64)  # beyond both ends: clean data, pure noise
    assert schedule.t_from_log_snr(lam_out).tolist() == pytest.approx([0.0, 1.0], abs=1e-6)


def test_default_inverse_is_bisection_against_a_closed_form():
    """Log-SNR linear in t (the README's plugin): t = (lambda - lambda_max) / (lambda_min - lambda_max)."""

    class LogLinear(Schedule):
        def alpha_sigma(self, t):
            lambda_ = 10.0 - 20.0 * t
            return torch.sigmoid(lambda_).sqrt(), torch.sigmoid(-lambda_).sqrt()

    lam = torch.linspace(9.5, -9.5, 39, dtype=torch.float64)
    assert torch.allclose(LogLinear().t_from_log_snr(lam), (lam - 10.0) / -20.0, rtol=0, atol=1e-12)


def test_discrete_inverse_is_exact_on_the_grid():
    schedule = build("cosine")
    grid = torch.arange(0, 1001, dtype=torch.float64) / 1000
    assert torch.equal(schedule.t_from_log_snr(schedule.log_snr(grid)), grid)


def chen_sigmoid(t, start=-3.0, end=3.0, tau=1.0, clip_min=1e-9):
    """Algorithm 1 of Chen (2023), "On the importance of noise scheduling for diffusion models"."""
    sigmoid = lambda x: 1.0 / (1.0 + math.exp(-x))
    v_start, v_end = sigmoid(start / tau), sigmoid(end / tau)
    output = (v_end - sigmoid((t * (end - start) + start) / tau)) / (v_end - v_start)
    return min(max(output, clip_min), 1.0)


@pytest.mark.parametrize(
    "params", [{}, {"start": 0.0, "end": 3.0, "tau": 0.9}, {"start": -3.0, "end": 3.0, "tau": 1.1}]
)
def test_sigmoid_matches_chen_algorithm_1(params):
    schedule = build("sigmoid", **params)
    for t in (0.0, 0.01, 0.25, 0.5, 0.75, 0.99, 0.999999, 1.0):
        alpha, sigma = schedule.alpha_sigma(torch.tensor([t], dtype=torch.float64))
        assert float(alpha) ** 2 == pytest.approx(chen_sigmoid(t, **params), rel=1e-9)
        assert float(alpha) ** 2 + float(sigma) ** 2 == pytest.approx(1.0, rel=1e-12)
    # t = 1 is clipped, so that samplers may divide by alpha there
    assert float(schedule.alpha_sigma(torch.tensor([1.0], dtype=torch.float64))[0]) == pytest.approx(1e-9**0.5)


def karras_sigmas(n, sigma_min=0.002, sigma_max=80.0, rho=7.0):
    """Eq. 5 of Karras et al. (2022), then sigma_N = 0."""
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return [(hi + i / (n - 1) * (lo - hi)) ** rho for i in range(n)] + [0.0]


@pytest.mark.parametrize("n", [2, 3, 18, 50, 256])
def test_edm_timesteps_are_karras_eq_5(n):
    schedule = build("edm")
    grid = schedule.timesteps(n)
    alpha, sigma = schedule.alpha_sigma(grid)
    assert len(grid) == n + 1 and bool((alpha == 1).all())
    assert sigma.tolist() == pytest.approx(karras_sigmas(n), rel=1e-12, abs=0)
    assert float(sigma[-2]) == 0.002 and float(sigma[-1]) == 0.0  # sigma_min exactly, then clean data
    assert float(sigma[0]) == pytest.approx(80.0, rel=1e-14)
    # a float32 copy of the times (as a network wrapper makes) still lands on sigma_min
    assert float(schedule.alpha_sigma(grid.float())[1][-2]) == pytest.approx(0.002, rel=1e-7)


def test_edm_training_noise_is_log_normal():
    """ln(sigma) ~ N(P_mean, P_std^2) = N(-1.2, 1.2^2) (Karras et al. 2022, table 1)."""
    schedule = build("edm")
    t = schedule.sample_t(20000, torch.Generator().manual_seed(0))
    log_sigma = schedule.alpha_sigma(t.double())[1].log()
    assert float(log_sigma.mean()) == pytest.approx(-1.2, abs=0.03)
    assert float(log_sigma.std()) == pytest.approx(1.2, abs=0.03)
    sigma = log_sigma.exp()
    assert bool((sigma >= 0.002).all() and (sigma <= 80.0).all())
