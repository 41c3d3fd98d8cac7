"""The loglinear schedule: the sandbox's conformance kit, then the closed form of Kingma et al. (2021)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from sandbox_loglinear import LogLinearParams
from sandbox_loglinear.schedule import build

from sandbox.errors import ParameterError, RecipeError
from sandbox.recipe import load_recipe
from sandbox.registry import get_registry
from sandbox.testing import check_schedule


def test_registered_through_its_entry_point():
    component = get_registry().get("schedule", "loglinear")
    assert component.provider == "sandbox-loglinear 0.1.0"
    assert component.params is LogLinearParams


@pytest.mark.parametrize(
    "params", [LogLinearParams(), LogLinearParams(lambda_max=6.0, lambda_min=-14.0)], ids=["default", "shifted"]
)
def test_conforms_to_the_schedule_contract(params):
    """Shapes, monotone log-SNR, time grid, training times, inverse, and every built-in sampler."""
    check_schedule("loglinear", params)


def test_closed_form():
    """lambda(t) = 10 - 20 t; alpha^2 = sigmoid(lambda), sigma^2 = sigmoid(-lambda); t(lambda) inverts it."""
    schedule = build(LogLinearParams())
    t = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
    lambda_ = 10.0 - 20.0 * t
    alpha, sigma = schedule.alpha_sigma(t)
    assert torch.allclose(alpha**2, torch.sigmoid(lambda_), rtol=1e-12)
    assert torch.allclose(sigma**2, torch.sigmoid(-lambda_), rtol=1e-12)
    assert torch.allclose(alpha**2 + sigma**2, torch.ones_like(t))  # variance preserving
    assert torch.equal(schedule.log_snr(t), lambda_)  # exact, not through logs
    assert alpha[2] == pytest.approx(0.5**0.5) and sigma[2] == pytest.approx(0.5**0.5)
    assert torch.allclose(
        schedule.t_from_log_snr(torch.tensor([10.0, 0.0, -10.0, 30.0])),
        torch.tensor([0.0, 0.5, 1.0, 0.0], dtype=torch.float64),
    )


def test_float32_times_keep_their_dtype_and_stay_accurate():
    schedule = build(LogLinearParams(lambda_max=20.0, lambda_min=-20.0))
    alpha, sigma = schedule.alpha_sigma(torch.tensor([0.0, 1.0]))
    assert alpha.dtype == sigma.dtype == torch.float32
    assert sigma[0] == pytest.approx(torch.sigmoid(torch.tensor(-20.0, dtype=torch.float64)).sqrt().item(), rel=1e-5)


def test_bounds_in_the_wrong_order_name_the_recipe_key():
    with pytest.raises(ParameterError, match="lambda_min"):
        LogLinearParams(lambda_max=-1.0, lambda_min=1.0)
    with pytest.raises(RecipeError, match=r"recipe key 'schedule.lambda_min': 12.0; expected a log-SNR below"):
        load_recipe(
            None,
            [
                "dataset.name=toy2d",
                "schedule.name=loglinear",
                "schedule.lambda_min=12",
                "denoiser.name=mlp",
                "sampler.name=ddim",
            ],
        )


def test_importing_the_plugin_does_not_import_torch():
    code = "import sys, sandbox_loglinear; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
