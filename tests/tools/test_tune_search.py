"""tune-steps' search and its guards: Levenberg-Marquardt against closed-form minima, the grid space, the
Brownian paths a stochastic sampler is scored on, and the own grid kept where nothing beats it held out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rich.console import Console

from sandbox import cli
from sandbox.engine.solve import TRAIN_PATHS, load_target, run_sampler, sampler_params, with_values
from sandbox.errors import SandboxError
from sandbox.tools.tune import tune_grid
from sandbox.tools.tune.search import levenberg_marquardt, nelder_mead
from sandbox.tools.tune.space import LogSnrGrid

ORACLE = Path(__file__).resolve().parents[2] / "recipes" / "oracle_mixture.yaml"


def rosenbrock(z: list[float]) -> torch.Tensor:
    """The extended Rosenbrock function as residuals (More, Garbow & Hillstrom 1981, problem 21): its sum
    of squares is 0 exactly at z = (1, ..., 1)."""
    x = torch.tensor(z, dtype=torch.float64)
    return torch.cat([10 * (x[1::2] - x[0::2] ** 2), 1 - x[0::2]])


def run(search, dims: int, budget: int) -> tuple[list[dict[str, float]], int]:
    seen: list[dict[str, float]] = []

    def accept(z, value, evaluations):
        seen.append({"z": z, "value": value, "evaluations": evaluations})
        return False

    z0 = [-1.2, 1.0] * (dims // 2)  # the standard start
    if search is levenberg_marquardt:
        used = levenberg_marquardt(rosenbrock, z0, budget, accept, step=1e-7)
    else:
        used = nelder_mead(lambda z: float(rosenbrock(z) @ rosenbrock(z)), z0, budget, accept)
    return seen, used


@pytest.mark.slow
def test_levenberg_marquardt_reaches_the_rosenbrock_minimum_in_20_dimensions_where_nelder_mead_does_not():
    seen, used = run(levenberg_marquardt, 20, 600)
    assert used <= 600 and seen[-1]["value"] < 1e-12
    assert torch.allclose(torch.tensor(seen[-1]["z"], dtype=torch.float64), torch.ones(20, dtype=torch.float64))
    values = [s["value"] for s in seen]
    assert values == sorted(values, reverse=True)  # only points that lower the objective are accepted
    simplex, used = run(nelder_mead, 20, 600)
    assert used <= 601 and simplex[-1]["value"] > 1.0  # measured: 42 after 600 evaluations (from 242)


def test_levenberg_marquardt_solves_a_linear_least_squares_problem_in_one_step():
    a = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5], [2.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([1.0, 2.0, -1.0, 0.5], dtype=torch.float64)
    exact = torch.linalg.lstsq(a, b.unsqueeze(1)).solution.squeeze(1)
    seen: list[list[float]] = []
    levenberg_marquardt(lambda z: a @ torch.tensor(z, dtype=torch.float64) - b, [5.0, -3.0], 4, _keep(seen), 1e-7)
    # the damped step at mu = 1e-3 is 0.1 % short of the Gauss-Newton one, which is exact for a linear model
    assert torch.allclose(torch.tensor(seen[0], dtype=torch.float64), exact, atol=1e-2)


def _keep(seen):
    def accept(z, value, evaluations):
        seen.append(z)
        return False

    return accept


def test_accept_stops_the_search():
    seen, stop_at = [], 2

    def accept(z, value, evaluations):
        seen.append(evaluations)
        return len(seen) >= stop_at

    used = levenberg_marquardt(rosenbrock, [-1.2, 1.0], 500, accept, step=1e-7)
    assert len(seen) == stop_at and used == seen[-1]


@pytest.fixture(scope="module")
def target(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("tune-search")
    return load_target(ORACLE, [f"run.output={out}"], Console(file=None))


def test_the_grid_space_round_trips_and_every_point_is_a_descending_grid(target):
    schedule = target.parts.schedule
    start = [1.0, 0.7, 0.4, 0.2, 0.05, 0.0]
    space = LogSnrGrid(schedule, start)
    assert space.decode(space.encode(start)) == pytest.approx(start, abs=1e-9)
    for z in ([0.0] * 4, [5.0, -5.0, 3.0, -3.0], [-2.0, 2.0, 0.0, 1.0]):  # far out a step can round to nothing
        times = space.decode(z)
        assert len(times) == 6 and times[0] == 1.0 and times[-1] == 0.0
        assert all(a > b for a, b in zip(times[:-1], times[1:]))


def test_a_step_more_than_three_times_the_one_before_is_outside_the_search(target):
    """In log-SNR: a near-zero step then a long one lets a multistep solver extrapolate a difference of two
    denoised estimates almost on top of each other over the long step."""
    schedule = target.parts.schedule
    space = LogSnrGrid(schedule, [1.0, 0.8, 0.6, 0.4, 0.2, 0.0])
    lam = [-2.0, -1.0, 0.0, 1.0, 4.5]  # steps 1, 1, 1, 3.5: the last 3.5 times the one before
    times = [1.0, *schedule.t_from_log_snr(torch.tensor(lam[1:], dtype=torch.float64)).tolist(), 0.0]
    assert not space.steady(times)
    lam[-1] = 3.9  # 2.9 times
    times = [1.0, *schedule.t_from_log_snr(torch.tensor(lam[1:], dtype=torch.float64)).tolist(), 0.0]
    assert space.steady(times)
    assert space.steady(space.decode([0.0] * 4))


def test_a_batch_on_several_paths_is_each_part_on_its_own_path(target):
    _, component, params = sampler_params(target, "euler_ancestral")
    params = with_values(params, steps=6)
    noise = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    both, nfe = run_sampler(target, component, params, noise, path=TRAIN_PATHS[:2])
    first, _ = run_sampler(target, component, params, noise[:4], path=TRAIN_PATHS[0])
    second, _ = run_sampler(target, component, params, noise[4:], path=TRAIN_PATHS[1])
    assert nfe == 6 and torch.equal(both, torch.cat([first, second]))
    one_path, _ = run_sampler(target, component, params, noise[4:], path=TRAIN_PATHS[0])
    assert not torch.equal(one_path, second)  # another path, other noise added


def test_nothing_beats_a_reference_the_own_grid_equals_so_the_own_grid_is_kept(target):
    """With the reference the sampler itself at the tuned steps on its own grid, the own grid's error is 0."""
    kept = tune_grid(target, 4, sampler="dpmpp_2m", batch=8, iterations=12, reference_steps=4)
    assert kept.before == {"train": 0.0, "heldout": 0.0} and kept.after == kept.before
    assert kept.kept_start and kept.chosen == "own" and kept.times == kept.start_times


def test_bad_held_out_and_search_are_refused(target, tmp_path, capsys):
    with pytest.raises(SandboxError, match="--heldout 1"):
        tune_grid(target, 4, sampler="dpmpp_2m", batch=4, heldout=1)
    with pytest.raises(SandboxError, match="--search 'newton'"):
        tune_grid(target, 4, sampler="dpmpp_2m", batch=4, search="newton")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["tune-steps", str(ORACLE), "--nfe", "4", "--search", "newton"])
    assert exit_info.value.code == 2 and "--search" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_says_when_it_keeps_the_own_grid(tmp_path, capsys, one_thread):
    code = cli.main(
        [
            "tune-steps",
            str(ORACLE),
            f"run.output={tmp_path}",
            *("--nfe", "4", "--sampler", "dpmpp_2m", "--batch", "8", "--iterations", "6"),
            *("--reference-steps", "4", "--search", "nelder-mead"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "kept the own grid" in out and "error against evaluations" in out
    (grid,) = tmp_path.glob("tune-*/grids/dpmpp_2m-nfe4.json")
    saved = json.loads(grid.read_text())
    assert saved["kept_start"] is True and saved["times"] == saved["start_times"] and saved["heldout"] == 32
    assert saved["search"] == "nelder-mead" and saved["history"][0]["evaluations"] >= 1
