"""The preconditioning table against the published closed forms of each prediction target."""

from __future__ import annotations

import math

import pytest
import torch

from sandbox.engine.precond import Preconditioned, exact_denoise
from sandbox.registry import get_registry
from sandbox.targets import TARGETS, scalings

REGISTRY = get_registry()
CASES = [(0.8, 0.6), (0.05, 0.9987), (1.0, 3.0), (1.0, 80.0)]


class Fixed:
    """A schedule with one (alpha, sigma) at every time."""

    def __init__(self, alpha: float, sigma: float):
        self.alpha, self.sigma = alpha, sigma

    def alpha_sigma(self, t):
        return torch.full_like(t, self.alpha), torch.full_like(t, self.sigma)

    def c_noise(self, t):
        return 1000.0 * t


def draws():
    g = torch.Generator().manual_seed(0)
    return torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)


def regression_target(target, x0, eps, alpha, sigma):
    s = scalings(target, Fixed(alpha, sigma), torch.full((len(x0),), 0.5, dtype=torch.float64))
    x_t = alpha * x0 + sigma * eps
    return (x0 - s.c_skip[:, None] * x_t) / s.c_out[:, None], s, x_t


@pytest.mark.parametrize("alpha, sigma", CASES)
def test_each_row_regresses_its_published_target(alpha, sigma):
    x0, eps = draws()
    closed = {
        "epsilon": eps,  # Ho et al. (2020)
        "x0": x0,
        "v": alpha * eps - sigma * x0,  # Salimans & Ho (2022), section 4
    }
    for target, expected in closed.items():
        value, _, _ = regression_target(target, x0, eps, alpha, sigma)
        assert torch.allclose(value, expected, atol=1e-9 * max(1.0, sigma / alpha)), target


@pytest.mark.parametrize("sigma", [0.002, 0.5, 3.0, 80.0])
def test_edm_row_is_karras_table_1_on_a_variance_exploding_process(sigma):
    """c_skip = s_d^2 / (sigma^2 + s_d^2), c_out = sigma s_d / sqrt(sigma^2 + s_d^2), c_in = 1 / sqrt(...),
    c_noise = ln(sigma) / 4, lambda = 1 / c_out^2 (Karras et al. 2022, table 1), for alpha = 1."""
    d = 0.5
    s = scalings("edm", Fixed(1.0, sigma), torch.full((1,), 0.5, dtype=torch.float64), sigma_data=d)
    root = math.sqrt(sigma**2 + d**2)
    assert float(s.c_skip) == pytest.approx(d**2 / root**2, rel=1e-12)
    assert float(s.c_out) == pytest.approx(sigma * d / root, rel=1e-12)
    assert float(s.c_in) == pytest.approx(1 / root, rel=1e-12)
    assert float(s.c_noise) == pytest.approx(math.log(sigma) / 4, rel=1e-12)
    assert float(s.weight) == pytest.approx((sigma**2 + d**2) / (sigma * d) ** 2, rel=1e-12)


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("alpha, sigma", CASES)
def test_a_perfect_network_output_gives_back_x0(target, alpha, sigma):
    x0, eps = draws()
    value, s, x_t = regression_target(target, x0, eps, alpha, sigma)
    denoised = s.c_skip[:, None] * x_t + s.c_out[:, None] * value
    assert torch.allclose(denoised, x0, atol=1e-9)


def test_schedule_targets_use_the_schedule_c_noise_and_edm_its_own():
    t = torch.tensor([0.25, 0.5], dtype=torch.float64)
    schedule = REGISTRY.get("schedule", "cosine").build()
    for target in ("epsilon", "x0", "v"):
        assert torch.allclose(scalings(target, schedule, t).c_noise, 1000 * t)
    alpha, sigma = schedule.alpha_sigma(t)
    assert torch.allclose(scalings("edm", schedule, t).c_noise, torch.log(sigma / alpha) / 4)


def test_preconditioned_feeds_c_in_x_and_c_noise_and_returns_x0():
    seen = {}

    class Net(torch.nn.Module):
        def forward(self, x, c_noise):
            seen["x"], seen["c_noise"] = x, c_noise
            return torch.zeros_like(x)  # "no noise" under epsilon: x0 = x_t / alpha

    d = Preconditioned(Net(), Fixed(0.5, 0.5), "epsilon")
    out = d(torch.ones(2, 3), 0.25)
    assert torch.allclose(out, torch.full((2, 3), 2.0))
    assert torch.allclose(seen["c_noise"], torch.full((2,), 250.0)) and seen["c_noise"].dtype == torch.float32
    edm = Preconditioned(Net(), Fixed(1.0, 2.0), "edm", sigma_data=0.5)
    edm(torch.ones(2, 3), torch.tensor([0.1, 0.9]))
    assert torch.allclose(seen["x"], torch.full((2, 3), 1 / math.sqrt(4.25)))
    assert torch.allclose(seen["c_noise"], torch.full((2,), math.log(2.0) / 4))
    with pytest.raises(ValueError, match="epsilon, x0, v"):
        Preconditioned(Net(), Fixed(0.5, 0.5), "score")


@pytest.mark.parametrize("target", list(TARGETS))
def test_exact_denoise_round_trip_is_the_exact_answer(target):
    x_t = torch.randn(4, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def exact_x0(x, alpha, sigma):
        return 0.3 * x / alpha

    schedule = REGISTRY.get("schedule", "cosine").build()
    out = exact_denoise(exact_x0, schedule, target)(x_t, 0.4)
    alpha, _ = schedule.alpha_sigma(torch.tensor([0.4], dtype=torch.float64))
    assert torch.allclose(out, 0.3 * x_t / alpha, rtol=1e-9)
