"""``sandbox sweep``: plan expansion, cell identity, resuming, invalid and failing cells, parallel jobs,
signals, the folder lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from sandbox import cli, hookimpl
from sandbox.engine.rundir import read_json
from sandbox.errors import RecipeError, SandboxError
from sandbox.registry import load_registry
from sandbox.tools.sweep import SweepLock, gpu_for, merge_axes, parse_axis, plan_sweep, plan_table, run_sweep

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


def wait_for(condition, timeout: float, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the sweep ended (exit {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Whether a process, or any process of its process group, still runs (zombies count as gone)."""
    for probe in (os.kill, os.killpg):
        try:
            probe(pid, 0)
        except ProcessLookupError:
            continue
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return True
    return False


def lockable(sweep_dir: Path) -> bool:
    try:
        with SweepLock(sweep_dir):
            return True
    except SandboxError:
        return False


def latest_step(cell_dir: Path) -> int:
    return int((cell_dir / "checkpoints" / "latest").read_text().strip()[len("step_") : -len(".pt")])


class SelfSignal:
    """A throwaway denoiser whose network sends SIGTERM to its own process at one training call."""

    def __init__(self, at: int):
        self.at, self.calls = at, 0

    @hookimpl
    def register_denoisers(self, register):
        import torch

        plugin = self

        class Net(torch.nn.Module):
            def __init__(self, shape):
                super().__init__()
                self.linear = torch.nn.Linear(shape[0] + 1, shape[0])

            def forward(self, x, c_noise):
                if self.training:
                    plugin.calls += 1
                    if plugin.calls == plugin.at:
                        os.kill(os.getpid(), signal.SIGTERM)
                return self.linear(torch.cat([x, c_noise[:, None] / 1000], dim=1))

        register("selfsignal", lambda params, shape: Net(shape))


@pytest.mark.slow
def test_sigterm_in_process_checkpoints_the_cell_starts_no_other_and_a_rerun_resumes_it(tiny_recipe):
    registry = load_registry({"self-signal": SelfSignal(at=25)})
    overrides = [*FAST, "train.steps=60", "train.checkpoint_every=10", "denoiser={name: selfsignal}"]
    plan = run_sweep(
        plan_sweep(tiny_recipe, overrides, seeds=2, registry=registry), console=quiet(), registry=registry
    )
    assert plan.interrupted == signal.SIGTERM
    first, second = plan.cells
    assert (first.status, second.status) == ("interrupted", "to run") and not plan.cell_dir(second).exists()
    status = read_json(plan.cell_dir(first) / "status.json")
    assert status["status"] == "interrupted" and status["step"] == latest_step(plan.cell_dir(first)) > 0
    record = read_json(plan.sweep_dir / "sweep.json")
    assert (record["state"], record["signal"]) == ("interrupted", "SIGTERM")
    assert [c["status"] for c in record["cells"]] == ["interrupted", "to run"]

    again = plan_sweep(tiny_recipe, overrides, seeds=2, registry=registry)
    assert (again.cells[0].status, again.cells[0].resume_step) == ("to resume", status["step"])
    run_sweep(again, console=quiet(), registry=registry)
    assert [c.status for c in again.cells] == ["ran", "ran"] and again.interrupted is None
    assert again.cells[0].note == f"resumed from step {status['step']}"
    assert f"resuming at step {status['step']} of 60" in (plan.cell_dir(first) / "console.txt").read_text()


@pytest.mark.slow
def test_sigterm_stops_a_parallel_sweep_and_the_same_command_resumes_its_cells(tiny_recipe, tmp_path, capsys):
    """SIGTERM to `sandbox sweep --jobs 2` while two cells train and a third waits: it exits 143 within seconds,
    no cell process survives, the third never starts; the same command again resumes both from their
    checkpoints. While it runs, a second sweep on the folder is refused."""
    overrides = [*FAST, "train.checkpoint_every=20", "train.log_every=20", "train.val_every=0", "run.threads=1"]
    args = ["sweep", str(tiny_recipe), *overrides, "--axis", "train.steps=800,801,20", "--jobs", "2"]
    plan = plan_sweep(tiny_recipe, overrides, axes=[parse_axis(args[-3])])
    folders = [plan.cell_dir(c) for c in plan.cells]
    log = tmp_path / "sweep.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "sandbox.cli", *args], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(
            lambda: all((f / "checkpoints" / "latest").exists() for f in folders[:2]),
            120,
            "both cells to checkpoint",
            process,
        )
        assert cli.main(args) == 1  # a second sweep on the folder
        err = " ".join(capsys.readouterr().err.split())
        assert f"sweep folder {plan.sweep_dir} is in use by another sandbox sweep, PID {process.pid}" in err
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        assert process.wait(timeout=60) == 143, log.read_text()[-3000:]
        assert time.monotonic() - sent < 15
    finally:
        if process.poll() is None:
            process.kill()
    output = " ".join(log.read_text().split())
    assert "sweep stopped by SIGTERM: 2 running cells stopped (each after a checkpoint), 1 not started" in output
    assert f"resume it with the same command: sandbox sweep {tiny_recipe}" in output
    record = read_json(plan.sweep_dir / "sweep.json")
    assert (record["state"], record["signal"]) == ("interrupted", "SIGTERM")
    assert [c["status"] for c in record["cells"]] == ["interrupted", "interrupted", "to run"]
    pids = [c["pid"] for c in record["cells"][:2]]
    assert all(pids) and not any(alive(pid) for pid in pids)  # nor their process groups
    assert not folders[2].exists()  # the waiting cell never started
    steps = [latest_step(f) for f in folders[:2]]
    assert [read_json(f / "status.json")["step"] for f in folders[:2]] == steps

    rerun = subprocess.run([sys.executable, "-m", "sandbox.cli", *args], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    for folder, step in zip(folders[:2], steps, strict=True):
        assert f"resuming at step {step:,} of" in (folder / "console.txt").read_text()
        assert f"resumed from step {step}" in " ".join(rerun.stdout.split())
        logged = [r["step"] for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines())]
        assert logged == sorted(set(logged)) and logged[-1] >= 800  # one log, continued in place
    assert all(isinstance(read_json(f / "summary.json"), dict) for f in folders)
    assert not list(plan.sweep_dir.glob("cells/*.incomplete-*"))


@pytest.mark.slow
def test_cells_of_a_killed_sweep_checkpoint_and_hold_the_lock_until_they_end(tiny_recipe):
    """SIGKILL to the sweep (nothing can be forwarded): its cell process gets SIGTERM from the OS, checkpoints and
    stops, and keeps the folder locked until then, so a rerun cannot clash with it."""
    overrides = [*FAST, "train.steps=100000", "train.checkpoint_every=20", "train.val_every=0", "run.threads=1"]
    plan = plan_sweep(tiny_recipe, overrides)
    folder = plan.cell_dir(plan.cells[0])
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox.cli", "sweep", str(tiny_recipe), *overrides, "--jobs", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: (folder / "checkpoints" / "latest").exists(), 120, "the cell to checkpoint", process)
        cell = read_json(plan.sweep_dir / "sweep.json")["cells"][0]["pid"]
        process.kill()
        process.wait(timeout=10)
        with pytest.raises(SandboxError, match=f"cell processes of sandbox sweep PID {process.pid}, which ended"):
            SweepLock(plan.sweep_dir).__enter__()
        wait_for(lambda: lockable(plan.sweep_dir), 60, "the orphaned cell to stop and free the folder")
    finally:
        process.kill()
        process.wait()
    assert not alive(cell)
    status = read_json(folder / "status.json")
    assert (status["status"], status["step"]) == ("interrupted", latest_step(folder))
    assert "SIGTERM" in status["message"]


def test_a_second_ctrl_c_kills_the_cell_processes():
    from sandbox.tools.sweep import _SweepStop

    cell = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print(flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        cell.stdout.readline()  # its handler is in
        stop = _SweepStop()
        stop.ready(cell.pid)
        stop(signal.SIGINT, None)  # passed on: the cell finishes its step
        assert stop.signum == signal.SIGINT and cell.poll() is None
        stop(signal.SIGINT, None)
        assert cell.wait(timeout=10) == -signal.SIGKILL and stop.killed
    finally:
        cell.kill()
        cell.wait()


def test_a_locked_folder_refuses_a_sweep_until_its_holder_dies_and_dry_run_needs_no_lock(tiny_recipe, capsys):
    sweep_dir = plan_sweep(tiny_recipe, FAST).sweep_dir
    hold = (
        "import sys, time; from sandbox.tools.sweep import SweepLock; SweepLock(sys.argv[1]).__enter__(); "
        "print(flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold, str(sweep_dir)], stdout=subprocess.PIPE)
    try:
        holder.stdout.readline()
        assert cli.main(["sweep", str(tiny_recipe), *FAST]) == 1
        err = " ".join(capsys.readouterr().err.split())
        assert f"sweep folder {sweep_dir} is in use by another sandbox sweep, PID {holder.pid}" in err
        assert not (sweep_dir / "sweep.json").exists()  # refused before writing anything
        assert cli.main(["sweep", str(tiny_recipe), *FAST, "--dry-run"]) == 0
        holder.kill()  # a crash releases the lock
        holder.wait(timeout=10)
        with SweepLock(sweep_dir), pytest.raises(SandboxError, match=f"PID {os.getpid()}"):
            SweepLock(sweep_dir).__enter__()
    finally:
        holder.kill()
        holder.wait()


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
