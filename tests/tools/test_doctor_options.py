"""``sandbox doctor``'s two modes take the same options where they mean the same thing and refuse the others.

Given a run folder, the ranking honours ``--json``, ``--plugin``, ``--threads`` and ``key=value`` overrides (a run
folder: sampling keys only, as ``sandbox sample``); ``--schedule`` and ``--target`` are refused (exit 2): the
run's network was trained on its own. Without a run, the oracle matrix refuses ``--nfe``, ``--reference``,
``--threads`` and overrides the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rich.console import Console

from sandbox import cli, plugins
from sandbox.engine.solve import load_target
from sandbox.tools.doctor.ranking import rank

TINY = """
dataset: {{name: toy2d, shape: moons, n_train: 256, n_val: 64}}
schedule: {{name: linear, num_steps: 100}}
denoiser: {{name: mlp, hidden: 16, layers: 2}}
sampler: {{name: ddim, steps: 4}}
train: {{steps: 10, batch_size: 32, log_every: 5, val_every: 0, sample_every: 0, warmup_steps: 2}}
eval: {{val_batches: 1, num_samples: 8, sample_batch: 8, grid_samples: 8}}
run: {{device: cpu, seed: 0, threads: 1, output: {output}}}
"""

ORACLE = Path(__file__).resolve().parents[2] / "recipes" / "oracle_mixture.yaml"
VOUCHED = "IMPORTED = True\n"

FAST = ["--nfe", "3", "--samples", "16", "--sampler", "ddim", "--sampler", "dpmpp_2m", "--grid", "schedule"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished 10-step run of a tiny MLP on the 2-D moons."""
    root = tmp_path_factory.mktemp("doctor-options")
    recipe = root / "tiny.yaml"
    recipe.write_text(TINY.format(output=root / "runs"))
    assert cli.main(["run", str(recipe)]) == 0
    (folder,) = (root / "runs").iterdir()
    return folder


def ranked(run_dir: Path, tmp_path: Path, *extra: str) -> dict:
    path = tmp_path / f"rank-{len(list(tmp_path.glob('rank-*')))}.json"
    assert cli.main(["doctor", str(run_dir), *extra, *FAST, "--json", str(path)]) == 0
    return json.loads(path.read_text())


@pytest.mark.slow
def test_json_holds_the_ranking(run_dir, tmp_path, capsys):
    data = ranked(run_dir, tmp_path)
    assert (data["source"], data["nfe"], data["samples"], data["exit_status"]) == (str(run_dir), 3, 16, 0)
    assert data["reference"]["sampler"] == "ddim" and data["reference"]["steps"] > 3
    assert [(r["rank"], r["grid"]) for r in data["rows"]] == [(1, "schedule"), (2, "schedule")]
    assert {r["sampler"] for r in data["rows"]} == {"ddim", "dpmpp_2m"}
    errors = [r["error"] for r in data["rows"]]
    assert errors == sorted(errors) and all(e >= 0 for e in errors)
    assert "results written to" in capsys.readouterr().out


@pytest.mark.slow
def test_an_override_changes_what_is_ranked(run_dir, tmp_path):
    own = ranked(run_dir, tmp_path)
    other = ranked(run_dir, tmp_path, "sampler.name=dpmpp_2m", "sampler.clip_x0=true")
    assert other["reference"]["sampler"] == "dpmpp_2m"  # the recipe's sampler is the default reference
    assert {r["sampler"]: r["error"] for r in other["rows"]} != {r["sampler"]: r["error"] for r in own["rows"]}


@pytest.mark.slow
@pytest.mark.parametrize("override", ["train.lr=1", "denoiser.hidden=64", "--schedule", "--target"])
def test_a_training_override_schedule_or_target_is_refused_with_a_run(run_dir, capsys, override):
    if override.startswith("--"):
        assert cli.main(["doctor", str(run_dir), override, "cosine", *FAST]) == 2
        expected = f"{override} applies to sandbox doctor without a run only: a run's network"
    else:
        assert cli.main(["doctor", str(run_dir), override, *FAST]) == 2
        expected = f"recipe key '{override.split('=')[0]}': cannot change when sampling"
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--schedule", "--target"])
def test_a_schedule_or_target_with_a_recipe_is_refused_before_any_work(capsys, option):
    assert cli.main(["doctor", str(ORACLE), option, "cosine", *FAST]) == 2
    err = capsys.readouterr().err
    assert f"{option} applies to sandbox doctor without a run only: a run's network" in err, err
    assert "give schedule.name=NAME" in err or "give train.target=NAME" in err


@pytest.mark.parametrize(
    "args, named",
    [
        (["sampler.steps=3"], "key=value overrides"),
        (["--nfe", "5"], "--nfe"),
        (["--reference", "ddim"], "--reference"),
    ],
)
def test_the_oracle_matrix_refuses_the_rankings_options(capsys, args, named):
    assert cli.main(["doctor", *args]) == 2
    assert f"{named} applies to sandbox doctor RUN_DIR_OR_RECIPE only" in capsys.readouterr().err


def test_the_oracle_matrix_runs_on_the_threads_asked_for(monkeypatch):
    from sandbox.tools.doctor import report

    seen = {}

    def run_doctor(registry, **options):
        seen["threads"] = options["threads"]
        raise SystemExit(0)

    monkeypatch.setattr(report, "run_doctor", run_doctor)
    for args, threads in ((["--threads", "2"], 2), ([], 1), (["--threads", "0"], 1)):
        with pytest.raises(SystemExit):
            cli.main(["doctor", *args])
        assert seen["threads"] == threads  # one unless given: thousands of tiny operations


@pytest.mark.slow
def test_threads_set_run_threads_and_come_back(run_dir, tmp_path):
    before = torch.get_num_threads()
    data = ranked(run_dir, tmp_path, "--threads", "1")
    assert data["exit_status"] == 0 and torch.get_num_threads() == before
    with pytest.raises(SystemExit) as refused:  # argparse refuses a negative count: exit status 2
        cli.main(["doctor", str(run_dir), "--threads", "-1", *FAST])
    assert refused.value.code == 2


@pytest.mark.slow
def test_progress_counts_the_reference_and_every_cell(run_dir):
    calls: list[tuple[str, int, int]] = []
    target = load_target(run_dir, [], Console(file=None))
    rows, _ = rank(
        target,
        3,
        samplers=["ddim", "euler"],
        grids=["schedule", "karras"],
        batch=8,
        reference_steps=20,
        progress=lambda *call: calls.append(call),
    )
    assert len(rows) == 4 and [(d, t) for _, d, t in calls] == [(i, 5) for i in range(6)]
    assert calls[0][0].startswith("reference (ddim") and calls[-1][0] == "done"
    every, _ = rank(target, 3, samplers=["ddim"], grids=["all"], batch=8, reference_steps=20)
    assert {row.grid for row in every} == set(target.registry.names("grid"))  # --grid all: as the oracle matrix


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory) -> Path:
    """The tiny run trained with a recipe that names the local plugin ``vouched.py`` (outside the run folder)."""
    root = tmp_path_factory.mktemp("doctor-plugin")
    (root / "vouched.py").write_text(VOUCHED)
    recipe = root / "tiny.yaml"
    recipe.write_text("plugins: [vouched.py]\n" + TINY.format(output=root / "runs"))
    assert cli.main(["run", str(recipe)]) == 0
    (folder,) = (root / "runs").iterdir()
    return folder


@pytest.mark.slow
def test_the_plugin_option_reaches_the_run_folders_loader(plugin_run, monkeypatch, capsys):
    monkeypatch.setattr(plugins, "_LOCAL_MODULES", {})  # a process that has loaded no local plugin yet
    monkeypatch.setattr(plugins, "_LOCAL_NAMES", set(), raising=False)
    vouched = plugin_run.parent.parent / "vouched.py"
    capsys.readouterr()
    assert cli.main(["doctor", str(plugin_run), *FAST]) == 2
    err = capsys.readouterr().err
    assert str(vouched) in err and "--plugin" in err, err
    assert cli.main(["doctor", str(plugin_run), *FAST, "--plugin", str(vouched)]) == 0
