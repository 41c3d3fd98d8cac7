"""Long runs: exact resume after SIGKILL at any point, safe checkpoints, signals, divergence, atomic files."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from sandbox import cli
from sandbox.engine import checkpoint
from sandbox.engine.rundir import atomic_write, read_json, write_json
from sandbox.engine.stop import StopRequest
from sandbox.errors import SandboxError

STEPS = 30
RECIPE = """
dataset: {{name: toy2d, shape: moons, n_train: 300, n_val: 64}}
schedule: {{name: cosine}}
denoiser: {{name: mlp, hidden: 32, layers: 2, dropout: 0.1}}
sampler: {{name: ddim, steps: 5}}
train: {{steps: {steps}, batch_size: 64, log_every: 4, val_every: 9, sample_every: 0, warmup_steps: 3,
        checkpoint_every: 5, target: v}}
eval: {{val_batches: 1, num_samples: 16, sample_batch: 16, grid_samples: 16}}
run: {{device: cpu, seed: 3, threads: 1, output: {output}}}
"""
TIMING = ("images_per_s",)

# Runs the CLI in a subprocess that kills itself with SIGKILL at a chosen point.
KILLER = textwrap.dedent("""
    import os, signal, sys
    import torch
    from sandbox import cli
    from sandbox.engine import checkpoint, training

    where, at = sys.argv[1], int(sys.argv[2])
    if where == "step":  # after optimizer step `at`, before anything is logged or saved for it
        original = training.Trainer.step
        def step(self, x0, labels=None):
            loss = original(self, x0, labels)
            if self.state.step + 1 == at:
                os.kill(os.getpid(), signal.SIGKILL)
            return loss
        training.Trainer.step = step
    else:  # halfway through writing checkpoint number `at` (1 = the first)
        calls = {"n": 0}
        real_save = torch.save
        def save(obj, handle, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == at:
                handle.write(b"\\x80" * 1000)
                handle.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(obj, handle, *args, **kwargs)
        checkpoint.torch.save = save
    sys.exit(cli.main(sys.argv[3:]))
""")


def write_recipe(folder: Path, steps: int = STEPS) -> Path:
    path = folder / "long.yaml"
    path.write_text(RECIPE.format(steps=steps, output=folder / "runs"))
    return path


def only_run(folder: Path) -> Path:
    (run,) = [p for p in (folder / "runs").iterdir() if p.is_dir()]
    return run


def metrics(run: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in record.items() if k not in TIMING} for record in lines]


def weights(run: Path) -> dict:
    state = checkpoint.load(run / "checkpoints" / "final.pt")
    return {"model": state["model"], "ema": state["ema"]["model"], "step": state["step"]}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same run left alone."""
    folder = tmp_path_factory.mktemp("reference")
    assert cli.main(["run", str(write_recipe(folder))]) == 0
    run = only_run(folder)
    return weights(run), metrics(run)


@pytest.mark.parametrize(
    "where, at",
    [
        ("step", 1),  # before any checkpoint: the run restarts in its folder
        ("step", 13),  # between checkpoints (the last is at step 10)
        ("checkpoint", 2),  # halfway through writing the step-10 checkpoint
        ("checkpoint", 6),  # halfway through writing final.pt
    ],
)
@pytest.mark.slow
def test_killed_and_resumed_run_is_bit_identical_to_one_left_alone(where, at, tmp_path, reference):
    recipe = write_recipe(tmp_path)
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, where, str(at), "run", str(recipe)], capture_output=True, text=True, timeout=300
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run = only_run(tmp_path)
    assert not (run / "summary.json").exists()
    for path in (run / "checkpoints").glob("*.pt") if (run / "checkpoints").exists() else []:
        checkpoint.load(path)  # whatever is there under a final name loads: never a torn file
    assert cli.main(["run", "--resume", str(run)]) == 0
    expected_weights, expected_metrics = reference
    got = weights(run)
    assert got["step"] == expected_weights["step"] == STEPS
    for part in ("model", "ema"):
        for key, value in expected_weights[part].items():
            assert torch.equal(got[part][key], value), f"{part}.{key} differs after resuming"
    assert metrics(run) == expected_metrics
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    assert not list((run / "checkpoints").glob(".*.tmp")), "a torn temporary file was left behind"


@pytest.mark.slow
def test_resume_refuses_an_override_that_changes_results_and_accepts_more_steps(tmp_path, capsys, reference):
    recipe = write_recipe(tmp_path)
    assert cli.main(["run", str(recipe)]) == 0
    run = only_run(tmp_path)
    assert cli.main(["run", "--resume", str(run), "train.lr=0.1"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "recipe key 'train.lr': cannot change when resuming (0.0002 in the run, 0.1 asked)" in err
    assert cli.main(["run", "--resume", str(run)]) == 1  # finished: nothing to resume
    assert "finished at step 30; extend it with train.steps=N" in " ".join(capsys.readouterr().err.split())
    assert cli.main(["run", "--resume", str(run), f"train.steps={STEPS + 6}"]) == 0
    assert weights(run)["step"] == STEPS + 6
    steps = [r["step"] for r in metrics(run)]
    assert steps == sorted(set(steps)) and steps[-2:] == [STEPS + 2, STEPS + 6]  # no line twice, none lost


@pytest.mark.slow
def test_sigterm_and_sigint_checkpoint_and_stop_with_their_exit_status(tmp_path):
    recipe = write_recipe(tmp_path, steps=100_000)
    for signum, status in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        for old in (tmp_path / "runs").glob("*"):
            old.rename(tmp_path / f"done-{old.name}")
        process = subprocess.Popen(
            [sys.executable, "-m", "sandbox.cli", "run", str(recipe)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait until it trains
            runs = list((tmp_path / "runs").glob("*/metrics.jsonl")) if (tmp_path / "runs").exists() else []
            if runs and runs[0].read_text().count("\n") >= 2:
                break
            time.sleep(0.1)
        process.send_signal(signum)
        _, err = process.communicate(timeout=60)
        assert process.returncode == status, err[-2000:]
        run = only_run(tmp_path)
        record = json.loads((run / "status.json").read_text())
        assert record["status"] == "interrupted" and record["step"] > 0
        assert checkpoint.load(Path(record["checkpoint"]))["step"] == record["step"]
        assert f"sandbox run --resume {run}" in " ".join(err.split())
        assert not (run / "summary.json").exists()


def test_a_second_ctrl_c_stops_at_once():
    stop = StopRequest()
    stop(signal.SIGINT, None)
    assert stop.signum == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
        stop(signal.SIGINT, None)


def test_an_exploding_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    recipe = write_recipe(tmp_path, steps=200)
    assert cli.main(["run", str(recipe), "train.lr=1e4", "train.grad_clip=0", "train.warmup_steps=0"]) == 1
    assert "training diverged" in capsys.readouterr().err
    run = only_run(tmp_path)
    assert not (run / "checkpoints" / "final.pt").exists() and not (run / "summary.json").exists()
    assert json.loads((run / "status.json").read_text())["status"] == "diverged"
    for path in (run / "checkpoints").glob("step_*.pt"):
        state = checkpoint.load(path)
        assert all(bool(torch.isfinite(v).all()) for v in state["model"].values() if v.is_floating_point())


def test_checkpoints_load_with_weights_only_and_bad_files_stop_with_one_message(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": 1, "x": Payload()}, evil)
    truncated = tmp_path / "truncated.pt"
    torch.save({"format": 1, "model": {"w": torch.zeros(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:500])
    foreign = tmp_path / "foreign.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), foreign)
    for path, message in (
        (evil, "cannot be read"),
        (truncated, "cannot be read"),
        (foreign, "is not a sandbox checkpoint of format 1"),
        (tmp_path / "nope.pt", "does not exist"),
    ):
        with pytest.raises(checkpoint.CheckpointError, match=message) as info:
            checkpoint.load(path)
        assert str(path) in str(info.value)


def test_resume_with_only_corrupt_checkpoints_names_them(tmp_path, capsys):
    recipe = write_recipe(tmp_path, steps=12)
    assert cli.main(["run", str(recipe)]) == 0
    run = only_run(tmp_path)
    for path in (run / "checkpoints").glob("*.pt"):
        path.write_bytes(os.urandom(256))
    (run / "summary.json").unlink()
    assert cli.main(["run", "--resume", str(run)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "no usable checkpoint" in err and "final.pt" in err and "Traceback" not in err


def test_a_failed_write_leaves_the_old_file_and_no_partial_one(tmp_path):
    path = tmp_path / "summary.json"
    write_json(path, {"old": True})

    def full_disk(handle):
        handle.write(b'{"new": tru')
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(SandboxError, match=f"could not write {path}: No space left on device"):
        atomic_write(path, full_disk)
    assert json.loads(path.read_text()) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
    path.write_text('{"torn": ')
    with pytest.warns(UserWarning, match="unreadable"):
        assert read_json(path) is None


@pytest.mark.parametrize(
    "override, message",
    [
        ("name=a/b", "recipe key 'name': 'a/b'; expected a plain folder name"),
        ("name=../../x", "recipe key 'name': '../../x'"),
        ("run.output={file}", "is a file, expected a folder"),
    ],
)
def test_bad_output_paths_stop_before_any_work(override, message, tmp_path, capsys):
    recipe = write_recipe(tmp_path)
    (tmp_path / "a-file").write_text("")
    assert cli.main(["run", str(recipe), override.format(file=tmp_path / "a-file" / "runs")]) == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "runs").exists()


def test_ema_weights_are_written_as_safetensors_with_recipe_and_step(tmp_path):
    from safetensors import safe_open

    recipe = write_recipe(tmp_path, steps=6)
    assert cli.main(["run", str(recipe)]) == 0
    run = only_run(tmp_path)
    state = checkpoint.load(run / "checkpoints" / "final.pt")
    with safe_open(str(run / "ema.safetensors"), framework="pt") as f:
        assert f.metadata()["step"] == "6" and "name: long" in f.metadata()["recipe"]
        for key, value in state["ema"]["model"].items():
            assert torch.equal(f.get_tensor(key), value)
    assert read_json(run / "summary.json")["outputs"]["ema"] == "ema.safetensors"


def test_a_garbage_digit_classifier_cache_is_rebuilt_with_a_warning(tmp_path, monkeypatch):
    from sandbox_plugins.datasets import digits_classifier as dc

    monkeypatch.setenv("SANDBOX_CACHE", str(tmp_path))
    monkeypatch.setattr(dc, "_MEMORY", {})
    monkeypatch.setattr(dc, "STEPS", 5)  # the rebuild is what is tested, not the classifier's accuracy
    images = torch.randn(40, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(40) % 10
    path = dc.cache_path("garbage-test")
    path.write_bytes(os.urandom(4096))
    with pytest.warns(UserWarning, match="unreadable"):
        model = dc.get_classifier(images, labels, key="garbage-test")
    assert model(images).shape == (40, 10)
    rebuilt = torch.load(path, weights_only=True)  # the bad cache was replaced by a good one
    assert set(rebuilt) == set(model.state_dict())
