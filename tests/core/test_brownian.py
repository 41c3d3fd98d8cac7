"""One Brownian path for every grid (``sandbox.sampling.brownian_path``): what lets a stochastic sampler be tuned."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rich.console import Console

from sandbox.engine.solve import load_target, mse, run_sampler, sampler_params, starting_noise, with_values
from sandbox.sampling import brownian_path, scale_free, step_noise
from sandbox.testing import build_component

COSINE = build_component("schedule", "cosine")
ORACLE = Path(__file__).resolve().parents[2] / "recipes" / "oracle_mixture.yaml"


def ratio(t: float) -> float:
    return scale_free(COSINE, t)[1] ** -2  # v = 1 / sigma~^2


def test_outside_a_path_the_noise_is_the_generators():
    x = torch.zeros(3, 5, dtype=torch.float64)
    drawn = step_noise(x, torch.Generator().manual_seed(4), COSINE, 0.7, 0.6)
    assert torch.equal(drawn, torch.randn(3, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64))


def test_a_coarse_step_is_the_sum_of_its_fine_steps_in_any_order_of_queries():
    """``z sqrt(dv)`` is the path's increment: over [0.8, 0.3] it is the sum of the increments over
    [0.8, 0.6], [0.6, 0.45] and [0.45, 0.3], whichever is asked for first, and the generator plays no part."""
    x = torch.zeros(4, 6, dtype=torch.float64)
    times = [0.8, 0.6, 0.45, 0.3]

    def increment(t, s, seed=0):
        return step_noise(x, torch.Generator().manual_seed(seed), COSINE, t, s) * (ratio(s) - ratio(t)) ** 0.5

    with brownian_path(3):
        coarse_first = increment(0.8, 0.3)
        fine = sum(increment(t, s, seed=i) for i, (t, s) in enumerate(zip(times[:-1], times[1:])))
    with brownian_path(3):
        fine_first = sum(increment(t, s) for t, s in zip(times[:-1], times[1:]))
        coarse_second = increment(0.8, 0.3, seed=9)
    assert torch.allclose(coarse_first, fine, rtol=0, atol=1e-9)
    assert torch.allclose(fine_first, fine, rtol=0, atol=1e-9) and torch.allclose(coarse_second, coarse_first)
    with brownian_path(4):
        assert not torch.allclose(increment(0.8, 0.3), coarse_first)  # another seed, another path


def test_the_draws_are_standard_normal():
    x = torch.zeros(200_000, dtype=torch.float64)
    with brownian_path(0):
        z = step_noise(x, None, COSINE, 0.9, 0.7)
    assert abs(float(z.mean())) < 0.01 and abs(float(z.var()) - 1.0) < 0.02  # 4.5 and 6.3 standard errors


def test_dpmpp_sde_with_a_zero_denoiser_is_the_path_itself_on_every_grid():
    """With D = 0 and eta = 1, DPM-Solver++ SDE's step is ``x~'/sigma~'^2 = x~/sigma~^2 + B(v') - B(v)``: its state
    at a time both grids share is the same on both, exactly, only because the path is in v = 1 / sigma~^2."""

    def states(grid):
        smp = build_component("sampler", "dpmpp_2m_sde", grid=grid)
        seen = {}
        noise = torch.randn(8, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        with brownian_path(5):
            smp(
                lambda x, t: torch.zeros_like(x),
                noise,
                COSINE,
                generator=torch.Generator().manual_seed(len(grid)),
                callback=lambda info: seen.update({round(info["t"], 9): info["x"]}),
            )
        return seen

    a = states([1.0, 0.8, 0.5, 0.2, 0.0])
    b = states([1.0, 0.9, 0.8, 0.65, 0.5, 0.3, 0.0])
    for t in (0.8, 0.5):
        assert torch.allclose(a[t], b[t], rtol=1e-9, atol=1e-9), float((a[t] - b[t]).abs().max())


@pytest.fixture(scope="module")
def target(tmp_path_factory, one_thread):
    return load_target(ORACLE, [f"run.output={tmp_path_factory.mktemp('bm')}"], Console(file=None))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dpmpp_2m_sde", "euler_ancestral", "ddpm"])
def test_a_stochastic_sampler_converges_along_one_path(target, name):
    """Strong convergence on the exact mixture: from the same noise and path, more steps come closer to an
    800-step solution; on another path they stay as far as two independent samples (measured for dpmpp_2m_sde:
    0.099 at 10 steps, 0.012 at 50, 0.78 on another path)."""
    _, component, params = sampler_params(target, name)
    noise = starting_noise(target, 64)
    ref, _ = run_sampler(target, component, with_values(params, steps=800), noise, path=1)
    errors = [
        mse(run_sampler(target, component, with_values(params, steps=n), noise, path=1)[0], ref) for n in (10, 50)
    ]
    other = mse(run_sampler(target, component, with_values(params, steps=50), noise, path=2)[0], ref)
    assert errors[1] < 0.3 * errors[0] and errors[1] < 0.05 * other, (errors, other)
