"""The Gaussian-mixture dataset's exact denoiser, the oracle built on it, and sampling with it.

The closed form is checked against the single-Gaussian formula, a Monte-Carlo
estimate of E[x0 | x_t] and its limits; then every registered sampler x
schedule x target samples the mixture with the oracle, so a new sampler or
schedule is tested against an exact answer the moment it registers.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from sandbox_plugins.datasets.gaussian_mixture import Reference, gaussian_w2, mixture
from sandbox_plugins.datasets.metrics import sliced_wasserstein

from sandbox import cli
from sandbox.engine.build import build_parts
from sandbox.engine.precond import exact_denoise
from sandbox.errors import RecipeError
from sandbox.protocols import AnalyticDenoiser
from sandbox.recipe import load_recipe
from sandbox.registry import get_registry
from sandbox.sampling import CountingDenoise, steps_for_budget
from sandbox.targets import TARGETS

# fmt: off
REGISTRY = get_registry()
RECIPES = Path(__file__).resolve().parents[2] / "recipes"
SAMPLE_NFE = 100   # network evaluations per sample in the sampling tests (the doctor's largest budget)
SAMPLE_SWD = 0.1   # bound on the sliced Wasserstein distance of 2,000 samples (noise floor about 0.03)
# fmt: on


def params(**overrides):
    p = REGISTRY.get("dataset", "gaussian_mixture").default_params()
    p.n_train, p.n_val = 16, 16
    for key, value in overrides.items():
        setattr(p, key, value)
    return p


def build(**overrides):
    return REGISTRY.get("dataset", "gaussian_mixture").build(params(**overrides))


def per_item(value: float, b: int, ndim: int = 2) -> torch.Tensor:
    return torch.full((b,) + (1,) * (ndim - 1), value, dtype=torch.float64)


UNEVEN = {
    "components": 3,
    "means": [[1.0, 0.0], [-0.5, 0.8], [0.2, -1.1]],
    "stds": [0.1, 0.3, 0.05],
    "weights": [0.5, 0.3, 0.2],
}


def test_one_component_is_the_single_gaussian_formula():
    mu, s = torch.tensor([0.5, -0.3, 1.2], dtype=torch.float64), 0.4
    data = build(dim=3, components=1, means=[mu.tolist()], std=s)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g, dtype=torch.float64) * 2
    alpha = torch.rand(64, 1, generator=g, dtype=torch.float64) * 0.99 + 0.01
    sigma = torch.rand(64, 1, generator=g, dtype=torch.float64) * 3
    expected = mu + alpha * s**2 / (alpha**2 * s**2 + sigma**2) * (x - alpha * mu)
    assert torch.allclose(data.exact_x0(x, alpha, sigma), expected, rtol=1e-10, atol=1e-12)


def test_image_shaped_mixture_keeps_shape_and_dtype():
    data = build(image_shape=[1, 8, 8], components=4, radius=0.8, std=0.2)
    assert tuple(data.shape) == (1, 8, 8) and data.render is None
    item, label = data.train[0]
    assert item.shape == (1, 8, 8) and item.dtype == torch.float32 and 0 <= label < 4
    x = torch.randn(5, 1, 8, 8)
    out = data.exact_x0(x, per_item(0.7, 5, 4).float(), per_item(0.5, 5, 4).float())
    assert out.shape == x.shape and out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    single = build(image_shape=[1, 8, 8], components=1, means=[[0.25] * 64], std=0.2)
    gain = 0.7 * 0.04 / (0.49 * 0.04 + 0.25)
    expected = 0.25 + gain * (x.double() - 0.7 * 0.25)
    assert torch.allclose(single.exact_x0(x.double(), per_item(0.7, 5, 4), per_item(0.5, 5, 4)), expected)


@pytest.mark.parametrize("alpha, sigma", [(0.98, 0.15), (0.8, 0.6), (0.4, 0.9), (1.0, 2.0)])
def test_exact_x0_agrees_with_monte_carlo(alpha, sigma):
    """E[x0 | x_t] = sum_i w_i x0_i / sum_i w_i with w_i = N(x_t; alpha x0_i, sigma^2 I), x0_i drawn exactly."""
    data = build(**UNEVEN)
    x0 = mixture(params(**UNEVEN)).sample(200_000, torch.Generator().manual_seed(1)).double()
    g = torch.Generator().manual_seed(2)
    x_t = alpha * mixture(params(**UNEVEN)).sample(6, g).double() + sigma * torch.randn(
        6, 2, generator=g, dtype=torch.float64
    )
    log_w = -((x_t[:, None, :] - alpha * x0[None]) ** 2).sum(-1) / (2 * sigma**2)
    w = torch.softmax(log_w, dim=1)
    estimate = w @ x0
    ess = 1 / (w**2).sum(1)
    spread = (w @ x0**2 - estimate**2).clamp(min=0).sqrt()  # posterior std per coordinate
    exact = data.exact_x0(x_t, per_item(alpha, 6), per_item(sigma, 6))
    assert bool((ess > 200).all())
    tolerance = 5 * spread / ess.sqrt()[:, None] + 1e-4  # five Monte-Carlo standard errors
    assert bool(((exact - estimate).abs() <= tolerance).all()), (exact, estimate, tolerance)


@pytest.mark.parametrize("alpha", [1.0, 0.7, 0.05])
def test_vanishing_noise_returns_x_t_over_alpha(alpha):
    data = build(**UNEVEN)
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for sigma in (0.0, 1e-9):
        out = data.exact_x0(x, per_item(alpha, 32), per_item(sigma, 32))
        assert torch.allclose(out, x / alpha, rtol=1e-6, atol=1e-9)


def test_overwhelming_noise_returns_the_mixture_mean():
    data = build(**UNEVEN)
    mean = torch.tensor(UNEVEN["weights"], dtype=torch.float64) @ torch.tensor(UNEVEN["means"], dtype=torch.float64)
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ve = data.exact_x0(1e4 * x, per_item(1.0, 32), per_item(1e4, 32))  # variance exploding
    vp = data.exact_x0(x, per_item(1e-12, 32), per_item(1.0, 32))  # alpha -> 0
    assert torch.allclose(ve, mean.expand_as(ve), atol=1e-3)
    assert torch.allclose(vp, mean.expand_as(vp), atol=1e-9)
    edm = data.exact_x0((80 * x).float(), per_item(1.0, 32).float(), per_item(80.0, 32).float())  # EDM's sigma_max
    assert bool(torch.isfinite(edm).all()) and float((edm.double() - mean).norm(dim=1).max()) < 0.2


def test_evaluate_scores_an_exact_draw_near_zero_and_matches_the_shared_metric():
    data = build()
    mix = mixture(params())
    draw = mix.sample(2000, torch.Generator().manual_seed(4))
    far = draw + 0.5
    exact, shifted = data.evaluate(draw), data.evaluate(far)
    assert exact["swd"] < 0.05 and exact["gauss_w2"] < 0.05
    assert shifted["swd"] > 0.3 and shifted["gauss_w2"] == pytest.approx(0.5 * math.sqrt(2), abs=0.05)
    reference = mix.sample(5000, torch.Generator().manual_seed(5))
    cached = Reference(reference)
    for n in (1, 333, 2000):
        assert cached.sliced_wasserstein(far[:n]) == pytest.approx(sliced_wasserstein(far[:n], reference), rel=1e-10)


def test_gaussian_w2_closed_form():
    m1, m2 = torch.zeros(3, dtype=torch.float64), torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64)
    c1, c2 = torch.eye(3, dtype=torch.float64), 4 * torch.eye(3, dtype=torch.float64)
    assert gaussian_w2(m1, c1, m2, c2) == pytest.approx(math.sqrt(9 + 3 * (1 - 2) ** 2))
    a = torch.tensor([[2.0, 0.3], [0.3, 0.5]], dtype=torch.float64)
    assert gaussian_w2(m1[:2], a, m1[:2], a) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize(
    "overrides, keys",
    [
        (["components=2", "means=[[0.0,0.0]]"], "recipe keys 'dataset.means', 'dataset.components'"),
        (["components=1", "means=[[0.0,0.0,1.0]]"], "recipe key 'dataset.means[0]'"),
        (["std=0.0"], "recipe key 'dataset.std'"),
        (["stds=[0.1,nan]", "components=2"], "recipe key 'dataset.stds[1]'"),
        (["weights=[1.0,2.0]"], "recipe keys 'dataset.weights', 'dataset.components'"),
        (["components=2", "weights=[0.0,0.0]"], "recipe key 'dataset.weights'"),
        (["components=0"], "recipe key 'dataset.components'"),
        (["image_shape=[1,0,8]"], "recipe key 'dataset.image_shape'"),
    ],
)
def test_invalid_parameters_name_the_recipe_key(overrides, keys):
    """The mixture's parameters check themselves when the recipe is loaded."""
    with pytest.raises(RecipeError, match=re.escape(keys)):
        load_recipe(
            None,
            [
                "dataset.name=gaussian_mixture",
                *(f"dataset.{o}" for o in overrides),
                "schedule.name=cosine",
                "denoiser.name=oracle",
                "sampler.name=ddim",
            ],
        )


def test_oracle_needs_a_dataset_with_a_closed_form(tmp_path):
    recipe = load_recipe(
        None,
        ["dataset.name=toy2d", "schedule.name=cosine", "denoiser.name=oracle", "sampler.name=ddim", "train.steps=0"],
    )
    with pytest.raises(
        RecipeError, match=re.escape("recipe key 'denoiser.name': 'oracle'; expected a dataset with a closed-form")
    ):
        build_parts(recipe, REGISTRY)


def test_oracle_is_an_analytic_denoiser_outside_the_network_path():
    oracle = REGISTRY.get("denoiser", "oracle").build(None, (2,))
    assert isinstance(oracle, AnalyticDenoiser) and not isinstance(oracle, torch.nn.Module)
    data = build()
    x, alpha, sigma = torch.randn(3, 2), torch.full((3, 1), 0.8), torch.full((3, 1), 0.6)
    assert torch.equal(oracle.bind(data)(x, alpha, sigma), data.exact_x0(x, alpha, sigma))
    parts = build_parts(load_recipe(RECIPES / "oracle_mixture.yaml"))
    assert parts.net is None and parts.exact_x0 is not None


@pytest.fixture(scope="module")
def oracle_setup():
    data = build()
    exact_x0 = REGISTRY.get("denoiser", "oracle").build(None, tuple(data.shape)).bind(data)
    noise = torch.randn(2000, 2, generator=torch.Generator().manual_seed(0))
    return data, exact_x0, noise


def sample(oracle, noise, sampler_name, schedule_name, target):
    schedule = REGISTRY.get("schedule", schedule_name).build(None)
    component = REGISTRY.get("sampler", sampler_name)
    params = component.default_params()
    if params is not None and hasattr(params, "steps"):
        params.steps = steps_for_budget(component, schedule, SAMPLE_NFE, exact_denoise(oracle, schedule), (2,))
    counter = CountingDenoise(exact_denoise(oracle, schedule, target))
    out = component.build(params)(counter, noise, schedule, generator=torch.Generator().manual_seed(1))
    return out, counter.nfe


@pytest.mark.slow
@pytest.mark.parametrize("schedule_name", REGISTRY.names("schedule"))
@pytest.mark.parametrize("sampler_name", REGISTRY.names("sampler"))
def test_every_sampler_and_schedule_samples_the_mixture_with_the_oracle(
    sampler_name, schedule_name, oracle_setup, one_thread
):
    """At about 100 NFE every target lands within SAMPLE_SWD of the mixture, and all targets agree."""
    data, oracle, noise = oracle_setup
    outputs = {}
    for target in TARGETS:
        out, nfe = sample(oracle, noise, sampler_name, schedule_name, target)
        assert out.shape == noise.shape and bool(torch.isfinite(out).all()), target
        swd = data.evaluate(out)["swd"]
        assert swd < SAMPLE_SWD, f"{sampler_name} / {schedule_name} / {target}: SWD {swd:.3f} at {nfe} NFE"
        outputs[target] = out
    # the oracle's x0 passes through each target's output form and back: the samples barely move
    first, *others = TARGETS
    for target in others:
        gap = float((outputs[target] - outputs[first]).abs().max())
        assert gap < 0.05, f"{target} differs from {first} by {gap:.3g}"


def test_recipe_runs_end_to_end_with_nothing_to_train(tmp_path, one_thread):
    recipe = RECIPES / "oracle_mixture.yaml"
    assert load_recipe(recipe).train.steps == 0
    assert cli.main(["run", str(recipe), f"run.output={tmp_path}", "eval.num_samples=1000"]) == 0
    (run_dir,) = tmp_path.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["denoiser_parameters"] == 0 and summary["train"]["steps"] == 0
    assert summary["sampling"]["nfe_per_sample"] == 50
    generated, real = summary["sample_quality"]["generated"], summary["sample_quality"]["real_heldout"]
    assert generated["swd"] < SAMPLE_SWD and generated["gauss_w2"] < SAMPLE_SWD
    assert real["swd"] < SAMPLE_SWD
    assert (run_dir / "samples" / "final.png").is_file()
