"""Loss weightings against their published closed forms, for every prediction target.

A network whose denoised estimate is off by ``delta`` has, on every target, a
loss of ``w_x0(t) * mean(delta^2)`` where ``w_x0`` is the weighting stated on
the x0 error: ``SNR(t)`` for epsilon-MSE ("L_simple" of Ho et al. 2020 in x0
terms), ``min(SNR, gamma)`` for min-SNR-gamma (Hang et al. 2023, eq. 9), and
``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2`` for EDM
(Karras et al. 2022, table 1).
"""

from __future__ import annotations

import pytest
import torch

from sandbox.engine.loss import DiffusionLoss
from sandbox.engine.precond import Preconditioned, per_item
from sandbox.registry import get_registry
from sandbox.targets import TARGETS, loss_weight, scalings

REGISTRY = get_registry()
N, D = 64, 3


class OffBy(Preconditioned):
    """A preconditioned denoiser whose x0 estimate is the true x0 plus a fixed error, whatever the target."""

    def __init__(self, schedule, target, x0: torch.Tensor, delta: torch.Tensor):
        super().__init__(torch.nn.Identity(), schedule, target, sigma_data=0.5)
        self.x0, self.delta = x0, delta

    def network(self, x_t, s):
        return (self.x0 + self.delta - per_item(s.c_skip, x_t) * x_t) / per_item(s.c_out, x_t)


def loss_and_scales(schedule_name: str, target: str, weighting: str, gamma: float = 5.0):
    schedule = REGISTRY.get("schedule", schedule_name).build()
    x0 = torch.randn(N, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    delta = 0.1 * torch.randn(N, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    loss = DiffusionLoss(weighting, min_snr_gamma=gamma)
    values = loss(OffBy(schedule, target, x0, delta), x0, torch.Generator().manual_seed(7))
    t = schedule.sample_t(N, torch.Generator().manual_seed(7))  # the draws the loss made
    alpha, sigma = (v.double() for v in schedule.alpha_sigma(t.double()))
    return values.double(), alpha, sigma, delta.pow(2).mean(1)


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("schedule_name", ["linear", "cosine", "edm"])
def test_min_snr_is_min_snr_gamma_on_the_x0_error(schedule_name, target):
    values, alpha, sigma, d2 = loss_and_scales(schedule_name, target, "min_snr", gamma=5.0)
    snr = (alpha / sigma) ** 2
    assert torch.allclose(values, snr.clamp(max=5.0) * d2, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("schedule_name", ["cosine", "edm"])
def test_edm_weighting_is_karras_lambda_on_the_x0_error(schedule_name, target):
    values, alpha, sigma, d2 = loss_and_scales(schedule_name, target, "edm")
    s2 = (sigma / alpha) ** 2
    lam = (s2 + 0.25) / (s2 * 0.25)
    assert torch.allclose(values, lam * d2, rtol=1e-4, atol=1e-9)


def test_uniform_epsilon_is_snr_times_the_x0_error_and_min_snr_on_epsilon_is_min_over_snr():
    """On epsilon, uniform weighting is L_simple (SNR x x0 error); min-SNR's weight is min(SNR, gamma) / SNR."""
    values, alpha, sigma, d2 = loss_and_scales("cosine", "epsilon", "uniform")
    snr = (alpha / sigma) ** 2
    assert torch.allclose(values, snr * d2, rtol=1e-4)
    schedule = REGISTRY.get("schedule", "cosine").build()
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    alpha, sigma = schedule.alpha_sigma(t)
    snr = (alpha / sigma) ** 2
    eps_weight = loss_weight("min_snr", scalings("epsilon", schedule, t), 0.5, 5.0)
    assert torch.allclose(eps_weight, snr.clamp(max=5.0) / snr, rtol=1e-9)
    v_weight = loss_weight("min_snr", scalings("v", schedule, t), 0.5, 5.0)  # Hang et al.: min(SNR, gamma) / (SNR + 1)
    assert torch.allclose(v_weight, snr.clamp(max=5.0) / (snr + 1), rtol=1e-6)


def test_edm_weighting_on_the_edm_target_is_one():
    """Karras et al. choose lambda(sigma) = 1 / c_out^2, so the preconditioned target is unweighted."""
    schedule = REGISTRY.get("schedule", "edm").build()
    s = scalings("edm", schedule, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    assert torch.allclose(loss_weight("edm", s, 0.5, 5.0), torch.ones(3, dtype=torch.float64), rtol=1e-9)


def test_unknown_weighting_names_the_choices():
    with pytest.raises(ValueError, match="uniform, min_snr, edm"):
        DiffusionLoss("snr")
