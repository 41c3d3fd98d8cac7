"""``sandbox sweep``: plan expansion, cell identity, resuming, invalid and failing cells, parallel jobs,
signals, the folder lock and its holder record, run and cell states."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from sandbox import cli, hookimpl
from sandbox.engine.rundir import read_json
from sandbox.errors import RecipeError
from sandbox.registry import load_registry
from sandbox.tools.sweep import gpu_for, merge_axes, parse_axis, plan_sweep, plan_table, run_sweep

FAST = ["train.steps=10", "train.val_every=5", "train.sample_every=0", "eval.num_samples=32"]


@pytest.fixture
def matrix_recipe(tiny_recipe: Path) -> Path:
    """The tiny toy recipe with a 2 x 2 matrix: a component parameter and a component's name."""
    with tiny_recipe.open("a") as handle:
        handle.write("matrix:\n  denoiser.hidden: [16, 32]\n  schedule.name: [linear, cosine]\n")
    return tiny_recipe


def quiet() -> Console:
    return Console(record=True, width=200)


def test_plan_expands_the_matrix_times_seeds_into_distinct_validated_cells(matrix_recipe):
    plan = plan_sweep(matrix_recipe, FAST, seeds=2)
    assert len(plan.cells) == 8 and len({c.id for c in plan.cells}) == 8
    assert [c.seed for c in plan.cells] == [0, 1] * 4
    assert {c.status for c in plan.cells} == {"to run"}
    assert plan.sweep_dir == matrix_recipe.parent / "runs" / "sweeps" / "tiny"
    last = plan.cells[-1]
    assert last.assignment == {"denoiser.hidden": "32", "schedule.name": "cosine"}
    assert last.recipe.components["denoiser"][1].hidden == 32  # an axis over a component parameter
    name, params = last.recipe.components["schedule"]
    assert name == "cosine" and params.num_steps == 1000  # a new name starts the section afresh
    assert last.recipe.train.steps == 10 and last.recipe.run.seed == 1


def test_a_command_line_axis_replaces_the_recipe_axis_on_the_same_key(matrix_recipe):
    plan = plan_sweep(matrix_recipe, FAST, axes=[parse_axis("denoiser.hidden=8,16,24")])
    assert [a.key for a in plan.axes] == ["denoiser.hidden", "schedule.name"]
    assert len(plan.cells) == 6
    section = merge_axes(plan.axes, [parse_axis("denoiser=[{name: mlp, hidden: 8}]")])
    assert [a.key for a in section] == ["denoiser", "schedule.name"]  # the section replaces its parameter axis


def test_whole_section_values_are_layers_labelled_by_name(tiny_recipe):
    axis = parse_axis("denoiser={name: mlp, layers: 1},{name: mlp, layers: 3}")
    assert axis.labels == ["mlp(layers=1)", "mlp(layers=3)"]  # same name: told apart by the rest
    plan = plan_sweep(tiny_recipe, FAST, axes=[axis])
    params = [c.recipe.components["denoiser"][1] for c in plan.cells]
    assert [(p.hidden, p.layers) for p in params] == [(32, 1), (32, 3)]  # same name: merged into the section


@pytest.mark.slow
def test_a_changed_recipe_gives_new_cell_ids(matrix_recipe):
    before = {c.id for c in plan_sweep(matrix_recipe, FAST, seeds=2).cells}
    after = {c.id for c in plan_sweep(matrix_recipe, [*FAST, "train.steps=11"], seeds=2).cells}
    assert before.isdisjoint(after)
    elsewhere = {c.id for c in plan_sweep(matrix_recipe, [*FAST, "run.output=/elsewhere"], seeds=2).cells}
    assert elsewhere == before  # the output folder is not identity


@pytest.mark.slow
def test_dry_run_prints_the_plan_and_runs_nothing(matrix_recipe, capsys):
    assert cli.main(["sweep", str(matrix_recipe), *FAST, "--seeds", "2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    plan = plan_sweep(matrix_recipe, FAST, seeds=2)
    assert all(cell.id in out for cell in plan.cells) and "to run" in out
    assert not plan.sweep_dir.exists()


def test_dry_run_with_an_invalid_cell_marks_it_and_exits_2(matrix_recipe, capsys):
    assert cli.main(["sweep", str(matrix_recipe), *FAST, "--axis", "train.lr=1e-3,fast", "--dry-run"]) == 2
    out = capsys.readouterr().out
    assert "4 to run, 4 invalid" in out and "train.lr" in out


@pytest.mark.parametrize(
    "axis", ["denoiser.hidden", "=1,2", "denoiser.hidden=", "denoiser.hidden=[1,2", "denoiser.hidden=1,,2"]
)
def test_bad_axis_syntax_exits_2_naming_the_axis(matrix_recipe, axis, capsys):
    assert cli.main(["sweep", str(matrix_recipe), "--axis", axis, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"axis '{axis}'" in err and "Traceback" not in err


@pytest.mark.slow
def test_run_resume_and_rerun_of_an_unfinished_cell(matrix_recipe):
    plan = run_sweep(plan_sweep(matrix_recipe, FAST, seeds=2), console=quiet())
    assert [c.status for c in plan.cells] == ["ran"] * 8
    folders = [plan.cell_dir(c) for c in plan.cells]
    assert all((f / "summary.json").exists() and (f / "recipe.yaml").exists() for f in folders)
    record = json.loads((plan.sweep_dir / "sweep.json").read_text())
    assert [c["id"] for c in record["cells"]] == [c.id for c in plan.cells] and record["state"] == "finished"
    stamps = {f: (f / "summary.json").stat().st_mtime_ns for f in folders}

    again = plan_sweep(matrix_recipe, FAST, seeds=2)
    assert {c.status for c in again.cells} == {"done"}
    run_sweep(again, console=quiet())
    assert {c.status for c in again.cells} == {"done"}  # nothing ran
    assert stamps == {f: (f / "summary.json").stat().st_mtime_ns for f in folders}

    resumable, fresh, torn = folders[3], folders[4], folders[5]
    (resumable / "summary.json").unlink()  # its checkpoints/final.pt is kept
    (fresh / "summary.json").unlink()
    (fresh / "checkpoints").rename(fresh / "old-checkpoints")  # nothing to resume from
    (torn / "summary.json").write_text('{"name": "tiny", "train": {')  # a half-written file is not done
    with pytest.warns(UserWarning, match="summary.json is unreadable"):
        third = plan_sweep(matrix_recipe, FAST, seeds=2)
    assert [c.status for c in third.cells] == ["done"] * 3 + ["to resume", "to rerun", "to resume"] + ["done"] * 2
    table = Console(record=True, width=300)
    table.print(plan_table(third))
    assert table.export_text().count("resume from step 10") == 2
    run_sweep(third, console=quiet())
    assert [c.status for c in third.cells] == ["done"] * 3 + ["ran"] * 3 + ["done"] * 2
    for folder in (resumable, torn):  # resumed in place, not moved aside
        assert "resuming at step 10 of 10" in (folder / "console.txt").read_text()
        assert not folder.with_name(f"{folder.name}.incomplete-1").exists()
    assert (torn / "summary.json.incomplete-1").read_text().endswith("{")  # the torn file is kept aside
    aside = fresh.with_name(f"{fresh.name}.incomplete-1")
    assert (aside / "metrics.jsonl").exists() and not (aside / "summary.json").exists()  # kept, not deleted
    assert all(isinstance(read_json(f / "summary.json"), dict) for f in folders)
    for f in folders[:3] + folders[6:]:
        assert (f / "summary.json").stat().st_mtime_ns == stamps[f]


class BrokenDenoiser:
    """A throwaway plugin whose denoiser fails to build."""

    @hookimpl
    def register_denoisers(self, register):
        def build(params, shape):
            raise RuntimeError("boom")

        register("broken", build)


@pytest.fixture
def registry_with_broken():
    return load_registry({"broken-denoiser": BrokenDenoiser()})


@pytest.mark.slow
def test_invalid_and_failing_cells_are_recorded_and_the_rest_runs(tiny_recipe, registry_with_broken):
    axes = [parse_axis("denoiser.name=mlp,broken"), parse_axis("sampler.name=ddim,nope")]
    plan = plan_sweep(tiny_recipe, FAST, axes=axes, registry=registry_with_broken)
    assert [c.status for c in plan.cells] == ["to run", "invalid", "to run", "invalid"]
    assert "unknown sampler 'nope'" in plan.cells[1].error
    console = Console(record=True, width=200)
    console.print(plan_table(plan))
    assert "invalid: recipe key 'sampler.name'" in console.export_text()

    run_sweep(plan, console=quiet(), registry=registry_with_broken)
    ran, invalid, failed, _ = plan.cells
    assert (ran.status, invalid.status, failed.status) == ("ran", "invalid", "failed")
    error = json.loads((plan.cell_dir(failed) / "error.json").read_text())
    assert "boom" in error["message"] and "RuntimeError" in error["traceback"]
    assert (plan.cell_dir(ran) / "summary.json").exists()
    assert not (plan.sweep_dir / "cells" / invalid.id).exists()

    from sandbox.tools.summary import summarize

    summary = summarize(plan.sweep_dir, console=quiet())
    statuses = {g.name: [c.status for c in g.cells] for g in summary.groups}
    assert statuses == {
        "mlp / ddim": ["done"],
        "mlp / nope": ["invalid"],
        "broken / ddim": ["failed"],
        "broken / nope": ["invalid"],
    }
    assert "boom" in (plan.sweep_dir / "summary.md").read_text()


@pytest.mark.slow
def test_jobs_2_runs_cells_in_separate_processes(tiny_recipe):
    plan = plan_sweep(tiny_recipe, FAST, axes=[parse_axis("denoiser.hidden=8,16")])
    run_sweep(plan, jobs=2, console=quiet())
    assert [c.status for c in plan.cells] == ["ran", "ran"]
    assert all((plan.cell_dir(c) / "summary.json").exists() for c in plan.cells)


def test_gpu_assignment_is_round_robin_for_auto_and_cuda_only():
    assert [gpu_for(i, "auto", 3) for i in range(4)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:0"]
    assert gpu_for(1, "cuda", 2) == "cuda:1"
    assert gpu_for(1, "cpu", 2) is None and gpu_for(1, "cuda:0", 2) is None
    assert gpu_for(1, "auto", 1) is None and gpu_for(1, "auto", 0) is None


def test_matrix_must_map_keys_to_lists(tiny_recipe):
    with tiny_recipe.open("a") as handle:
        handle.write("matrix:\n  denoiser.hidden: 16\n")
    with pytest.raises(RecipeError, match=r"matrix\.denoiser\.hidden"):
        plan_sweep(tiny_recipe)


def test_a_single_run_ignores_the_matrix(matrix_recipe):
    from sandbox.recipe import load_recipe

    assert load_recipe(matrix_recipe).components["denoiser"][1].hidden == 32


# --- signals, the folder lock ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("jobs", [1, 2])
def test_cells_that_differ_only_in_sampling_share_one_training(tiny_recipe, tmp_path, jobs):
    """Axes over sampler and eval keys train once; every cell samples from that training with its own settings."""
    axes = [parse_axis("sampler.name=ddim,dpmpp_2m"), parse_axis("sampler.steps=3,6")]
    plan = plan_sweep(tiny_recipe, FAST, axes=axes, out=tmp_path / "sweep")
    assert [c.trained_by for c in plan.cells] == [None, 0, 0, 0]
    assert "samples from #0's training" in " ".join(text_of(plan_table(plan)).split())
    run_sweep(plan, jobs=jobs, console=quiet())
    assert {c.status for c in plan.cells} == {"ran"}
    folders = [plan.cell_dir(c) for c in plan.cells]
    trained = [f for f in folders if (f / "checkpoints" / "final.pt").exists()]
    assert trained == [folders[0]], "exactly one training run"
    for cell, folder in zip(plan.cells, folders, strict=True):
        summary = read_json(folder / "summary.json")
        steps = int(cell.assignment["sampler.steps"])
        assert (
            summary["sampling"]["nfe_per_sample"] == steps
            and summary["sampling"]["sampler"] == cell.assignment["sampler.name"]
        )
        assert summary["components"]["sampler"]["params"]["steps"] == steps
        assert summary["train"] == read_json(folders[0] / "summary.json")["train"]
        assert ("trained_in" in summary) == (folder != folders[0])
    again = plan_sweep(tiny_recipe, FAST, axes=axes, out=tmp_path / "sweep")
    assert {c.status for c in again.cells} == {"done"}


def text_of(renderable) -> str:
    console = Console(record=True, width=200)
    console.print(renderable)
    return console.export_text()


def test_a_run_and_a_sweep_cell_climb_the_same_ladder_of_states(tmp_path):
    from sandbox.engine.rundir import RunDir, SweepDir, write_json
    from sandbox.engine.runlock import RunLock
    from sandbox.engine.sweepdir import CellStatus, sweep_status
    from sandbox.tools.sweep.status import run_status

    sweep = SweepDir(tmp_path / "sweep")
    sweep.path.mkdir()
    write_json(sweep.plan, {"state": "done", "cells": [{"id": "c0", "group": {}, "seed": 0, "status": "running"}]})
    for folder in (tmp_path / "run", sweep.cell("c0")):
        run = RunDir(folder)
        run.checkpoints.mkdir(parents=True)
        run.recipe.write_text("name: tiny\n")
        (run.checkpoints / "step_000005.pt").write_bytes(b"")
        write_json(run.status, {"status": "training", "step": 7})

    def states() -> tuple[CellStatus, CellStatus]:
        return run_status(tmp_path / "run"), sweep_status(sweep.path)[0]

    resumes = (f"resume it: sandbox run --resume {tmp_path / 'run'}", "sandbox sweep resumes it")
    for row, resume in zip(states(), resumes, strict=True):
        assert row.state == "interrupted"
        assert row.detail == f"died at or after step 7 (checkpoint at step 5); {resume}"
    with RunLock(tmp_path / "run"), RunLock(sweep.cell("c0")):
        assert all(row.state == "running" and "step 7 (PID" in row.detail for row in states())
    for folder in (tmp_path / "run", sweep.cell("c0")):
        write_json(RunDir(folder).status, {"status": "interrupted", "step": 5})
    assert all(row.state == "interrupted" and row.detail.startswith("stopped at step 5") for row in states())
    for folder in (tmp_path / "run", sweep.cell("c0")):
        write_json(RunDir(folder).error, {"message": "it broke"})
    assert all((row.state, row.detail) == ("failed", "it broke") for row in states())
    for folder in (tmp_path / "run", sweep.cell("c0")):
        write_json(RunDir(folder).summary, {})
    assert all(row.state == "done" for row in states())


def test_the_sweep_lock_records_its_holder_as_a_run_lock_does(tmp_path):
    import os
    import socket

    from sandbox.engine.rundir import SweepDir
    from sandbox.errors import SandboxError
    from sandbox.tools.sweep import SweepLock

    with SweepLock(tmp_path):
        assert json.loads(SweepDir(tmp_path).lock.read_text()) == {"pid": os.getpid(), "host": socket.gethostname()}
        with pytest.raises(SandboxError, match=f"another sandbox sweep, PID {os.getpid()} \\(stop it with kill"):
            SweepLock(tmp_path).__enter__()
        SweepDir(tmp_path).lock.write_text(f"{os.getpid()}\n")  # a bare PID, as sweeps recorded it before the host
        with pytest.raises(SandboxError, match=f"another sandbox sweep, PID {os.getpid()} \\(stop"):
            SweepLock(tmp_path).__enter__()
