"""``sandbox sweep`` under signals and locks: SIGTERM, SIGKILL and Ctrl-C stop cells at a checkpoint, the same
command resumes them, and one folder holds one sweep at a time."""

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
from sandbox.errors import SandboxError
from sandbox.registry import load_registry
from sandbox.tools.sweep import SweepLock, parse_axis, plan_sweep, run_sweep

FAST = ["train.steps=10", "train.val_every=5", "train.sample_every=0", "eval.num_samples=32"]


def quiet() -> Console:
    return Console(record=True, width=200)


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
    from sandbox.tools.sweep import SweepStop

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
        stop = SweepStop()
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
