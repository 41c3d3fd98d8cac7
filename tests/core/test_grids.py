"""Time grids: the built-ins' definitions, every grid with every sampler through the registry, explicit
lists, third-party grids and the error for an unknown name."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sandbox import cli, hookimpl
from sandbox.engine.build import build_parts
from sandbox.errors import RecipeError
from sandbox.recipe import load_recipe
from sandbox.registry import get_registry
from sandbox.sampling import CountingDenoise, scale_free
from sandbox.testing import build_component as build
from sandbox.testing import check_grid, gaussian_denoiser, register_plugin

REGISTRY = get_registry()
GRIDDED = [
    n
    for n in REGISTRY.names("sampler")
    if "grid" in {f.name for f in dataclasses.fields(REGISTRY.get("sampler", n).params)}
]


@pytest.mark.slow
@pytest.mark.parametrize("grid", REGISTRY.names("grid"))
def test_every_grid_conforms(grid):
    """The conformance kit: shapes, ends, order, determinism, and every built-in sampler's NFE on it."""
    check_grid(grid, schedules=["linear", "edm"])


@pytest.mark.parametrize("grid", REGISTRY.names("grid"))
@pytest.mark.parametrize("sampler_name", GRIDDED)
@pytest.mark.parametrize("schedule_name", ["cosine", "edm"])
def test_every_grid_with_every_sampler(sampler_name, grid, schedule_name):
    """Through the registry: the sampler steps exactly on the grid's times, NFE is what it reports, finite."""
    schedule = build("schedule", schedule_name)
    smp = build("sampler", sampler_name, grid=grid, steps=6)
    times = REGISTRY.get("grid", grid).build(REGISTRY.get("grid", grid).default_params())(schedule, 6).tolist()
    assert smp.times(schedule) == times
    seen = []
    counter = CountingDenoise(gaussian_denoiser(schedule, torch.tensor([1.0, -0.5]), 0.5))
    out = smp(counter, torch.randn(32, 2), schedule, generator=torch.Generator().manual_seed(0), callback=seen.append)
    assert bool(torch.isfinite(out).all())
    assert counter.nfe == smp.nfe(schedule)
    assert [info["i"] for info in seen] == list(range(len(times) - 1))
    if sampler_name != "heun":  # Heun's churn is off by default: its callbacks sit on the grid too
        assert counter.nfe == len(times) - 1
    assert [info["t"] for info in seen] == times[:-1]


def test_karras_grid_on_the_edm_schedule_is_its_eq_5():
    schedule = build("schedule", "edm")
    for steps in (2, 5, 18, 40):
        karras = build("sampler", "euler", grid="karras", steps=steps).times(schedule)
        assert torch.allclose(torch.tensor(karras, dtype=torch.float64), schedule.timesteps(steps), atol=1e-12)


def test_karras_grid_follows_eq_5_with_rho():
    """sigma_i = (s_max^(1/rho) + i/(n-1) (s_min^(1/rho) - s_max^(1/rho)))^rho, s_max = min(sigma~(1), 80)."""
    schedule = build("schedule", "linear")
    for rho in (3.0, 7.0):
        times = build("sampler", "heun", rho=rho, steps=8).times(schedule)
        sigmas = [scale_free(schedule, t)[1] for t in times[:-1]]
        top, low = sigmas[0] ** (1 / rho), sigmas[-1] ** (1 / rho)
        expected = [(top + i / 7 * (low - top)) ** rho for i in range(8)]
        assert sigmas[0] == pytest.approx(80.0, rel=1e-9)  # linear's sigma~(1) is 157
        assert sigmas == pytest.approx(expected, rel=1e-6)
        assert times[-2] == 1 / 1000 and times[-1] == 0.0


def test_uniform_log_snr_grid_is_evenly_spaced_in_log_snr():
    schedule = build("schedule", "cosine")
    times = build("sampler", "dpmpp_2m", grid="uniform_log_snr", steps=9).times(schedule)
    lam = schedule.log_snr(torch.tensor(times[:-1], dtype=torch.float64))
    assert torch.allclose(lam.diff(), lam.diff().mean().expand(8), rtol=1e-5)


@pytest.mark.parametrize("spacing", ["trailing", "leading"])
def test_trailing_and_leading_are_diffusers_spacings(spacing):
    """diffusers' DDIMScheduler on T = 1000 with 10 steps: its timestep k is our time (k + 1) / T."""
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing)
    schedule = build("schedule", "linear")
    for steps in (3, 10, 50, 999):
        scheduler.set_timesteps(steps)
        expected = [(int(k) + 1) / 1000 for k in scheduler.timesteps] + [0.0]
        assert build("sampler", "ddim", grid=spacing, steps=steps).times(schedule) == expected


def test_trailing_is_the_discrete_schedules_own_grid():
    schedule = build("schedule", "cosine")
    for steps in (1, 7, 10, 333, 1000, 2000):
        assert (
            build("sampler", "ddim", grid="trailing", steps=steps).times(schedule)
            == schedule.timesteps(steps).tolist()
        )


def test_an_explicit_list_fixes_the_steps():
    schedule = build("schedule", "cosine")
    times = [1.0, 0.7, 0.31, 0.05, 0.0]
    for name in GRIDDED:
        smp = build("sampler", name, grid=times, steps=50)
        assert smp.times(schedule) == times
        counter = CountingDenoise(gaussian_denoiser(schedule, torch.zeros(2), 1.0))
        smp(counter, torch.randn(8, 2), schedule, generator=torch.Generator().manual_seed(0))
        assert counter.nfe == smp.nfe(schedule) == (7 if name == "heun" else 4)


def test_an_explicit_list_through_a_recipe_override(tmp_path):
    recipe = load_recipe(
        None,
        [
            "dataset.name=gaussian_mixture",
            "denoiser.name=oracle",
            "schedule.name=cosine",
            "sampler.name=unipc",
            "sampler.grid=[1.0,0.5,0.1,0.0]",
        ],
    )
    parts = build_parts(recipe)
    assert parts.sampler.times(parts.schedule) == [1.0, 0.5, 0.1, 0.0]


def test_an_unknown_grid_names_the_recipe_key(capsys):
    recipe = load_recipe(
        None,
        [
            "dataset.name=gaussian_mixture",
            "denoiser.name=oracle",
            "schedule.name=cosine",
            "sampler.name=heun",
            "sampler.grid=karas",
        ],
    )
    with pytest.raises(
        RecipeError,
        match=r"recipe key 'sampler.grid': 'karas'; expected a registered grid .* "
        r"Did you mean 'karras'\?",
    ):
        build_parts(recipe)


class HalvingGrid:
    """A third-party grid: t halves each step, then 0."""

    @hookimpl
    def register_grids(self, register):
        register(
            "halving",
            lambda params: (
                lambda schedule, steps: torch.tensor([0.5**i for i in range(steps)] + [0.0], dtype=torch.float64)
            ),
        )


def test_a_third_party_grid_registers_and_is_listed():
    with register_plugin(HalvingGrid(), name="halving-grid") as registry:
        assert registry.get("grid", "halving").plugin == "halving-grid"
        check_grid("halving", registry=registry, schedules=["cosine"], samplers=["euler", "unipc"])
        recipe = load_recipe(
            None,
            [
                "dataset.name=gaussian_mixture",
                "denoiser.name=oracle",
                "schedule.name=cosine",
                "sampler.name=dpmpp_3m",
                "sampler.grid=halving",
                "sampler.steps=4",
            ],
            registry=registry,
        )
        parts = build_parts(recipe)
        assert parts.sampler.times(parts.schedule) == [1.0, 0.5, 0.25, 0.125, 0.0]
        assert cli.main(["list"]) == 0


def test_sandbox_list_shows_the_grids(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "grids" in out
    for name in REGISTRY.names("grid"):
        assert name in out


def test_a_broken_grid_fails_the_kit():
    with pytest.raises(AssertionError, match="strictly descend"):
        check_grid(
            lambda schedule, steps: torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64), schedules=["cosine"]
        )
