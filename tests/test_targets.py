"""Prediction targets: each target's regression value and its conversion back to x0 are exact."""

from __future__ import annotations

import pytest
import torch

from sandbox.targets import TARGETS, Denoiser, to_x0, training_target


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("alpha, sigma", [(0.8, 0.6), (0.05, 0.9987), (1.0, 3.0)])
def test_a_perfect_prediction_converts_back_to_x0(target, alpha, sigma):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    a, s = torch.tensor(alpha, dtype=torch.float64), torch.tensor(sigma, dtype=torch.float64)
    x_t = a * x0 + s * eps
    assert torch.allclose(to_x0(target, training_target(target, x0, eps, a, s), x_t, a, s), x0, atol=1e-10)


def test_v_is_the_salimans_ho_velocity():
    """v = alpha eps - sigma x0 (Salimans & Ho 2022, section 4): for VP it is d x_t / d phi."""
    x0, eps = torch.tensor([1.0]), torch.tensor([0.0])
    assert float(training_target("v", x0, eps, torch.tensor(0.6), torch.tensor(0.8))) == pytest.approx(-0.8)


def test_denoiser_wrapper_feeds_c_noise_and_returns_x0():
    seen = {}

    class Net(torch.nn.Module):
        def forward(self, x, c_noise):
            seen["c_noise"] = c_noise
            return torch.zeros_like(x)  # "no noise" under epsilon: x0 = x_t / alpha

    class Schedule:
        def alpha_sigma(self, t):
            return torch.full_like(t, 0.5), torch.full_like(t, 0.5)

        def c_noise(self, t):
            return 1000 * t

    d = Denoiser(Net(), Schedule(), "epsilon")
    out = d(torch.ones(2, 3), 0.25)
    assert torch.allclose(out, torch.full((2, 3), 2.0))
    assert torch.allclose(seen["c_noise"], torch.full((2,), 250.0))
    with pytest.raises(ValueError, match="epsilon, x0, v"):
        Denoiser(Net(), Schedule(), "score")
