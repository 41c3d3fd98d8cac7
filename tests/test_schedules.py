"""Schedules against their published closed forms, and the schedule contract for every registered one."""

from __future__ import annotations

import math

import pytest
import torch

from sandbox.registry import get_registry

REGISTRY = get_registry()


def build(name, **overrides):
    component = REGISTRY.get("schedule", name)
    params = component.default_params()
    for key, value in overrides.items():
        setattr(params, key, value)
    return component.build(params)


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
    f = lambda t: math.cos((t + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
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
    assert 0.4 < float(draws.mean()) < 0.6
    assert schedule.c_noise(t).shape == t.shape
