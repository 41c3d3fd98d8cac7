"""The fault suite: kills at random points, a full disk at each write site, corrupt files, two commands on one folder.

Each case injects one fault and asserts the outcome: the run survives (bit-identical after resuming), nothing is
lost, or one clear message (never a traceback). The cases are parametrised lists, so the number of faults injected
is the number of cases collected: ``python -m pytest -q tests/engine/test_faults.py``.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from test_long_runs import KILLER, STEPS, metrics, only_run, weights, write_recipe

from sandbox import cli
from sandbox.engine import checkpoint
from sandbox.engine.rundir import RunDir, check_output, read_json, write_json
from sandbox.engine.runlock import RunLock, lock_holder
from sandbox.errors import RecipeError, SandboxError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The run of :data:`test_long_runs.RECIPE` left alone."""
    folder = tmp_path_factory.mktemp("reference")
    assert cli.main(["run", str(write_recipe(folder))]) == 0
    run = only_run(folder)
    return weights(run), metrics(run)


def same_as_reference(run: Path, reference) -> None:
    expected_weights, expected_metrics = reference
    got = weights(run)
    assert got["step"] == expected_weights["step"] == STEPS
    for part in ("model", "ema"):
        for key, value in expected_weights[part].items():
            assert torch.equal(got[part][key], value), f"{part}.{key} differs after resuming"
    assert metrics(run) == expected_metrics
    assert read_json(RunDir(run).status)["status"] == "finished"
    assert not list(RunDir(run).checkpoints.glob(".*.tmp")), "a temporary file was left behind"


# --- kills at random points ------------------------------------------------------------------------------------

# Where a SIGKILL lands, drawn with a fixed seed: after optimizer step N, halfway through checkpoint write N (the
# recipe checkpoints every 5 of its 30 steps, then writes final.pt: 7 writes), or N milliseconds after the run
# folder's status.json first says training, sent from outside (wherever the run then is).
_DRAW = random.Random(20261203)
KILLS = [
    ("step", _DRAW.randint(1, STEPS - 1)),
    ("checkpoint", _DRAW.randint(1, 7)),
    ("step", _DRAW.randint(1, STEPS - 1)),
    ("ms", _DRAW.randint(0, 400)),
    ("ms", _DRAW.randint(0, 400)),
]


class Killed:
    """A run started in a subprocess that kills itself with SIGKILL at ``where``, ``at`` (:data:`KILLER`), or
    that is killed ``at`` milliseconds after it starts training (``where="ms"``)."""

    def __init__(self, folder: Path, where: str, at: int, steps: int = STEPS):
        self.folder, self.where, self.at = folder, where, at
        recipe = write_recipe(folder, steps=steps)
        inside = [where, str(at)] if where != "ms" else ["step", "0"]  # step 0 never comes: no self-kill
        self.process = subprocess.Popen(
            [sys.executable, "-c", KILLER, *inside, "run", str(recipe)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def kill_when_training(self) -> None:
        deadline = time.time() + 120
        while not list(self.folder.glob("runs/*/status.json")) and self.process.poll() is None:
            assert time.time() < deadline
            time.sleep(0.005)
        time.sleep(self.at / 1000)
        self.process.send_signal(signal.SIGKILL)

    def run(self) -> tuple[Path, bool]:
        """The run's folder once the subprocess has ended, and whether it was killed (a kill from outside may
        come after the run finished)."""
        _, err = self.process.communicate(timeout=120)
        killed = self.process.returncode == -signal.SIGKILL
        assert killed or (self.where == "ms" and self.process.returncode == 0), err[-2000:]
        return only_run(self.folder), killed


@pytest.fixture(scope="module")
def killings(tmp_path_factory) -> dict[str, Killed]:
    """Every killed run this module needs, started at once (their imports overlap): the random kills of
    :data:`KILLS`, and a 14-step run killed after step 13 (``"corrupt"``) for the corrupt files to be put in."""
    runs = {f"{w}-{a}": Killed(tmp_path_factory.mktemp(f"{w}-{a}"), w, a) for w, a in KILLS}
    runs["corrupt"] = Killed(tmp_path_factory.mktemp("corrupt"), "step", 13, steps=14)
    for run in runs.values():
        if run.where == "ms":
            run.kill_when_training()
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("where, at", KILLS, ids=[f"{w}-{a}" for w, a in KILLS])
def test_a_run_killed_at_a_random_point_resumes_bit_identical(where, at, killings, reference, capsys):
    run, killed = killings[f"{where}-{at}"].run()
    status = read_json(RunDir(run).status)
    if killed and status["status"] != "finished":  # a kill from outside may land as the run exits
        assert status["status"] == "training" and status["host"] == socket.gethostname()
        assert isinstance(status["pid"], int)
        assert lock_holder(run) is None, "a killed run's lock is free: the run is known dead"
        capsys.readouterr()
        assert cli.main(["run", "--resume", str(run)]) == 0
        out = " ".join(capsys.readouterr().out.split())
        assert f"the previous session (PID {status['pid']} on {status['host']}) died" in out
    same_as_reference(run, reference)


# --- a full disk at each write site ------------------------------------------------------------------------------


def _full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


class _FullFile:
    """A file whose writes fail: the disk fills up halfway through ``torch.save``."""

    def __init__(self, real):
        self.real = real

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.real.close()


def _fill_while_writing(monkeypatch):
    import builtins

    real_open = builtins.open

    def fake_open(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        return _FullFile(handle) if "w" in mode and str(path).endswith(".tmp") else handle

    monkeypatch.setattr(builtins, "open", fake_open)


DISK_SITES = {
    "os.replace": lambda mp: mp.setattr(os, "replace", _full),
    "open": lambda mp: mp.setattr("builtins.open", _full),
    "torch.save": lambda mp: mp.setattr(checkpoint.torch, "save", _full),
    "os.fsync": lambda mp: mp.setattr(os, "fsync", _full),
    "write": _fill_while_writing,
    "torch.save RuntimeError": lambda mp: mp.setattr(
        checkpoint.torch, "save", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("file write failed"))
    ),
    "latest": lambda mp: mp.setattr(checkpoint, "LATEST", "no-such-folder/latest"),
    "keep": lambda mp: mp.setattr(Path, "unlink", _full),
    "mkdir": lambda mp: mp.setattr(Path, "mkdir", _full),
}


def _state(step: int = 0) -> dict:
    return {**{key: torch.zeros(3) for key in checkpoint.KEYS if key != "format"}, "step": step}


@pytest.mark.parametrize("site", list(DISK_SITES))
def test_a_full_disk_at_each_checkpoint_write_is_one_clear_message(site, tmp_path, monkeypatch):
    folder = tmp_path / "checkpoints"
    checkpoint.save(folder, checkpoint.step_name(5), _state(), keep=1)
    with monkeypatch.context() as mp:
        DISK_SITES[site](mp)
        with pytest.raises(SandboxError) as raised:
            checkpoint.save(folder, checkpoint.step_name(10), _state(), keep=1)
    message = str(raised.value)
    assert "step_000010.pt" in message or "latest" in message or "checkpoints" in message, message
    assert "\n" not in message
    assert not list(folder.glob(".*.tmp")), "a partial file was left"
    found = checkpoint.latest_good(folder)
    assert found is not None and found[1]["step"] == 0  # a good checkpoint is still there


@pytest.mark.slow
def test_a_full_disk_during_a_run_stops_it_with_one_message_and_resume_finishes_it(tmp_path, monkeypatch, capsys):
    recipe = write_recipe(tmp_path, steps=12)
    real_replace, calls = os.replace, {"n": 0}

    def replace(src, dst):
        if str(dst).endswith("step_000010.pt"):
            calls["n"] += 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    with monkeypatch.context() as mp:
        mp.setattr(os, "replace", replace)
        assert cli.main(["run", str(recipe)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert calls["n"] == 1 and "No space left on device" in err and "Traceback" not in err
    run = only_run(tmp_path)
    assert not list(RunDir(run).checkpoints.glob(".*.tmp"))
    assert cli.main(["run", "--resume", str(run)]) == 0
    assert read_json(RunDir(run).status)["status"] == "finished"


def test_a_full_disk_where_the_digit_classifier_cache_lives_is_a_warning(tmp_path, monkeypatch):
    from sandbox_plugins.datasets import digits_classifier as dc

    monkeypatch.setenv("SANDBOX_CACHE", str(tmp_path))
    monkeypatch.setattr(dc, "_MEMORY", {})
    monkeypatch.setattr(dc, "STEPS", 3)
    images = torch.randn(20, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(20) % 10
    _fill_while_writing(monkeypatch)  # the cache's temporary file is opened, then its writes fail
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(f, (str, Path)):
            Path(f).write_bytes(b"\x80" * 10)  # a torn write, then the disk is full
            raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(dc.torch, "save", save)
    with pytest.warns(UserWarning, match="could not write the digit-classifier cache"):
        model = dc.get_classifier(images, labels, key="full-disk")
    assert model(images).shape == (20, 10)
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a temporary file was left"


# --- corrupt files of each kind ----------------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


CORRUPTIONS = {
    "truncated checkpoint": lambda run: _truncate(RunDir(run).step_checkpoint(10)),
    "garbage checkpoint": lambda run: RunDir(run).step_checkpoint(10).write_bytes(os.urandom(2000)),
    "garbage latest": lambda run: (RunDir(run).checkpoints / "latest").write_bytes(os.urandom(50)),
    "latest naming a missing file": lambda run: (RunDir(run).checkpoints / "latest").write_text("step_000099.pt\n"),
    "garbage status.json": lambda run: RunDir(run).status.write_bytes(b'{"status": "trai'),
    "truncated metrics line": lambda run: RunDir(run).metrics.open("a").write('{"step": 13, "loss": 0.'),
    "stale temporary file": lambda run: (RunDir(run).checkpoints / f".step_000015.pt.{_dead_pid()}.tmp").write_bytes(
        b"\x80" * 100
    ),
}


def _dead_pid() -> int:
    """The PID of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture(scope="module")
def killed(killings) -> Path:
    """A 14-step run killed after step 13: checkpoints at step 5 and 10, ``status.json`` says training."""
    return killings["corrupt"].run()[0]


def copy_of(run: Path, folder: Path) -> Path:
    return Path(shutil.copytree(run, folder / run.name))


def trained_once(run: Path, steps: int) -> None:
    assert read_json(RunDir(run).status)["status"] == "finished"
    logged = [record["step"] for record in metrics(run)]
    assert logged == sorted(set(logged)) and logged[-1] == steps, "metrics.jsonl lost or repeated a step"
    assert checkpoint.load(RunDir(run).final_checkpoint)["step"] == steps
    assert not list(RunDir(run).checkpoints.glob(".*.tmp")), "a temporary file was left behind"


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_a_corrupt_file_of_each_kind_is_survived(kind, killed, tmp_path, capsys):
    run = copy_of(killed, tmp_path)
    CORRUPTIONS[kind](run)
    assert cli.main(["run", "--resume", str(run)]) == 0
    assert "Traceback" not in capsys.readouterr().err
    trained_once(run, 14)


def test_sample_with_a_corrupt_final_checkpoint_points_only_at_one_that_loads(tmp_path, capsys):
    from sandbox.console import console
    from sandbox.engine.sample import find_checkpoint

    folder = tmp_path / "checkpoints"
    for step in (5, 10):
        checkpoint.save(folder, checkpoint.step_name(step), _state())
    checkpoint.save(folder, checkpoint.FINAL, _state())
    (folder / checkpoint.FINAL).write_bytes(b"garbage")
    (folder / checkpoint.step_name(10)).write_bytes(b"garbage too")
    with pytest.raises(checkpoint.CheckpointError) as raised:
        find_checkpoint(tmp_path, None, console)
    assert f"--checkpoint {folder / checkpoint.step_name(5)}" in str(raised.value)
    (folder / checkpoint.step_name(5)).write_bytes(b"garbage as well")
    with pytest.raises(checkpoint.CheckpointError) as raised:
        find_checkpoint(tmp_path, None, console)
    assert "--checkpoint" not in str(raised.value)


def test_a_run_name_too_long_for_a_file_name_is_refused_naming_the_key(tmp_path):
    with pytest.raises(RecipeError, match=r"recipe key 'name'.*too long"):
        check_output(tmp_path, "x" * 300)
    check_output(tmp_path, "x" * 200)


# --- two commands on one folder ----------------------------------------------------------------------------------

# Runs the CLI in a subprocess that stops after step `at`, writes `ready`, and waits for `go` before training on.
HOLDER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from sandbox import cli
    from sandbox.engine import training

    at, ready, go = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    original = training.Trainer.step
    def step(self, x0, labels=None):
        loss = original(self, x0, labels)
        if self.state.step + 1 == at:
            ready.write_text(str(os.getpid()))
            deadline = time.time() + 60
            while not go.exists() and time.time() < deadline:
                time.sleep(0.02)
        return loss
    training.Trainer.step = step
    sys.exit(cli.main(sys.argv[4:]))
""")


def hold(tmp_path: Path, at: int, args: list[str]) -> tuple[subprocess.Popen, Path]:
    """Start ``sandbox ARGS`` in a subprocess that pauses after step ``at`` (holding its run's lock)."""
    ready, go = tmp_path / f"ready-{at}", tmp_path / f"go-{at}"
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(at), str(ready), str(go), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while not ready.exists():
        assert child.poll() is None and time.time() < deadline, child.stderr.read() if child.stderr else ""
        time.sleep(0.02)
    return child, go


CONCURRENT = ["resume while the run trains", "two resumes"]


@pytest.mark.slow
@pytest.mark.parametrize("case", CONCURRENT)
def test_a_second_command_on_a_run_folder_is_refused_while_the_first_holds_it(case, killed, tmp_path, capsys):
    if case == "two resumes":
        child, go = hold(tmp_path, 14, ["run", "--resume", str(copy_of(killed, tmp_path))])
        run = tmp_path / killed.name
    else:
        child, go = hold(tmp_path, 7, ["run", str(write_recipe(tmp_path, steps=14))])
        run = only_run(tmp_path)
    status = read_json(RunDir(run).status)
    assert status["status"] == "training" and status["pid"] == child.pid and status["host"] == socket.gethostname()
    assert lock_holder(run) == {"pid": child.pid, "host": socket.gethostname()}
    partial = RunDir(run).checkpoints / f".step_000020.pt.{child.pid}.tmp"  # the live run's write in progress
    partial.parent.mkdir(exist_ok=True)
    partial.write_bytes(b"half")
    checkpoint.remove_partial_writes(RunDir(run).checkpoints)
    assert partial.exists(), "a live run's temporary file was deleted"
    partial.unlink()

    assert cli.main(["run", "--resume", str(run)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"PID {child.pid}" in err and socket.gethostname() in err and "Traceback" not in err
    go.write_text("")
    _, err = child.communicate(timeout=120)
    assert child.returncode == 0, err[-2000:]
    trained_once(run, 14)  # the refused command trained nothing: no step twice in metrics.jsonl
    assert lock_holder(run) is None


def test_the_run_lock_refuses_a_second_holder_and_frees_with_its_process(tmp_path):
    with RunLock(tmp_path):
        assert lock_holder(tmp_path) == {"pid": os.getpid(), "host": socket.gethostname()}
        with pytest.raises(SandboxError, match=f"in use by PID {os.getpid()} on host {socket.gethostname()}") as e:
            RunLock(tmp_path).__enter__()
        assert e.value.exit_code == 2
    assert lock_holder(tmp_path) is None
    write_json(RunDir(tmp_path).status, {"status": "training", "step": 3, "pid": 1, "host": "elsewhere"})
    with RunLock(tmp_path):
        pass


def test_sweep_status_tells_a_live_cell_from_one_that_died(tmp_path):
    from sandbox.engine.rundir import SweepDir
    from sandbox.engine.sweepdir import sweep_status

    sweep = SweepDir(tmp_path)
    write_json(sweep.plan, {"state": "done", "cells": [{"id": "c0", "group": {}, "seed": 0, "status": "running"}]})
    cell = RunDir(sweep.cell("c0"))
    cell.path.mkdir(parents=True)
    write_json(cell.status, {"status": "training", "step": 7, "pid": 1, "host": socket.gethostname()})
    (row,) = sweep_status(sweep.path)
    assert row.state == "interrupted" and "died" in row.detail
    with RunLock(cell.path):
        (row,) = sweep_status(sweep.path)
    assert row.state == "running" and f"PID {os.getpid()}" in row.detail


def test_partial_writes_of_a_dead_process_and_our_own_are_removed_others_kept(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        names = {
            "dead": f".step_000005.pt.{_dead_pid()}.tmp",
            "own": f".step_000010.pt.{os.getpid()}.tmp",
            "live": f".step_000015.pt.{sleeper.pid}.tmp",
            "foreign": ".notes.tmp",
        }
        for name in names.values():
            (tmp_path / name).write_bytes(b"x")
        checkpoint.remove_partial_writes(tmp_path)
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == sorted([names["live"], names["foreign"]])
    finally:
        sleeper.kill()
        sleeper.wait()
