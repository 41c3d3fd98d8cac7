"""Data-parallel training: two CPU processes (gloo) through the real ``sandbox run --nproc 2``.

The tolerance. Both runs see the same global batches in the same order, and the
noise and times of each global batch are drawn whole from generators in the
same state and then split (``DiffusionLoss(within=...)``), so the two processes'
mean gradient equals the single process's gradient except for the order of the
float32 sums (the per-process means, DDP's division by the world size before
its all-reduce): a relative difference of about 1e-7 per step, which AdamW
keeps relative (it divides by the root of the second moment). Measured on this
recipe, the largest relative difference of any logged loss is 1.5e-7 over 40
steps, 2.1e-6 over 200 and 4.8e-6 over 1,000 (the signal test stops at a step
that depends on the machine's speed). ``RTOL`` = 1e-4 leaves a margin of 20 at
1,000 steps and still catches the real mistakes: noise drawn by each process
for its own rows instead (0.16 over 40 steps), or gradients not averaged over
the processes (0.02). The recipe has no dropout, whose masks each process
draws for its own rows.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sandbox import cli
from sandbox.engine import checkpoint, distributed
from sandbox.errors import RecipeError
from sandbox.recipe import load_recipe

RTOL = 1e-4
STEPS = 40
RECIPE = """
dataset: {{name: toy2d, shape: moons, n_train: 512, n_val: 128}}
schedule: {{name: cosine}}
denoiser: {{name: mlp, hidden: 32, layers: 2, dropout: 0.0}}
sampler: {{name: ddim, steps: 5}}
train: {{steps: {steps}, batch_size: 64, lr: 2e-3, log_every: 4, val_every: 20, warmup_steps: 3,
        checkpoint_every: 20, target: v}}
eval: {{val_batches: 2, num_samples: 16, sample_batch: 16, grid_samples: 16}}
run: {{device: cpu, seed: 3, threads: 1, output: {output}}}
"""
TIMING = ("images_per_s",)


def write_recipe(folder: Path, steps: int = STEPS) -> Path:
    path = folder / "ddp.yaml"
    path.write_text(RECIPE.format(steps=steps, output=folder / "runs"))
    return path


def launch(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """``python -m sandbox run --nproc 2 ARGS`` (the torchrun launcher) in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "sandbox", "run", "--nproc", "2", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def only_run(output: Path) -> Path:
    runs = [p for p in output.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs  # one run folder: the other rank created none
    return runs[0]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_trajectory(got: list[dict], want: list[dict], rtol: float = RTOL) -> float:
    """Same lines, same keys, every logged figure within ``rtol``; returns the largest relative difference."""
    assert [r["step"] for r in got] == [r["step"] for r in want]
    worst = 0.0
    for a, b in zip(got, want):
        assert set(a) == set(b), (a, b)
        for key in set(a) - {"step", *TIMING}:
            assert math.isclose(a[key], b[key], rel_tol=rtol, abs_tol=1e-12), (a["step"], key, a[key], b[key])
            worst = max(worst, abs(a[key] - b[key]) / max(abs(b[key]), 1e-12))
    return worst


@pytest.fixture(scope="module")
def pair(tmp_path_factory, one_thread):
    """The same recipe trained by one process and by two (through ``sandbox run --nproc 2``)."""
    folder = tmp_path_factory.mktemp("ddp")
    recipe = write_recipe(folder)
    assert cli.main(["run", str(recipe), f"run.output={folder / 'single'}"]) == 0
    done = launch(str(recipe), f"run.output={folder / 'ddp'}")
    assert done.returncode == 0, done.stderr[-3000:]
    return folder, recipe, only_run(folder / "single"), only_run(folder / "ddp"), done


@pytest.mark.slow
def test_two_processes_follow_the_single_process_loss_trajectory(pair):
    _, _, single, ddp, _ = pair
    lines = metrics(ddp)
    assert [r["step"] for r in lines] == list(range(4, STEPS + 1, 4))  # every log step once: one writer
    assert_same_trajectory(lines, metrics(single))
    a, b = checkpoint.load(ddp / "checkpoints" / "final.pt"), checkpoint.load(single / "checkpoints" / "final.pt")
    assert set(a["model"]) == set(b["model"])  # the plain module's keys, no DDP "module." prefix
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=RTOL, atol=1e-6)


def test_only_rank_zero_writes_and_prints(pair):
    _, _, single, ddp, done = pair
    files = sorted(str(p.relative_to(ddp)) for p in ddp.rglob("*"))
    assert files == sorted(str(p.relative_to(single)) for p in single.rglob("*"))
    assert not [name for name in files if name.endswith(".tmp")]
    assert json.loads((ddp / "status.json").read_text())["status"] == "finished"
    assert done.stdout.count("Recipe 'ddp' on cpu") == 1  # the component table, printed once
    assert done.stdout.count("Summary of 'ddp'") == 1


@pytest.mark.slow
def test_checkpoints_of_two_processes_resume_in_one(pair, tmp_path):
    _, _, single, ddp, _ = pair
    copies = [shutil.copytree(run, tmp_path / name) for run, name in ((single, "single"), (ddp, "ddp"))]
    for copy in copies:
        assert cli.main(["run", "--resume", str(copy), f"train.steps={STEPS + 12}"]) == 0
    assert_same_trajectory(metrics(copies[1]), metrics(copies[0]))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the worker processes through /proc")
def test_a_signal_to_one_process_stops_all_at_one_step_and_the_run_resumes(pair, tmp_path):
    _, recipe, *_ = pair
    output = tmp_path / "runs"
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "run", "--nproc", "2", str(recipe), "train.steps=100000"]
        + [f"run.output={output}", "train.checkpoint_every=0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait until it trains
            found = list(output.glob("*/metrics.jsonl")) if output.exists() else []
            if found and found[0].read_text().count("\n") >= 3:
                break
            time.sleep(0.1)
        os.kill(workers(process.pid)[1], signal.SIGTERM)  # rank 1 only: the stop is agreed at the next step
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 143, err[-3000:]
    run = only_run(output)
    record = json.loads((run / "status.json").read_text())
    assert record["status"] == "interrupted" and record["step"] > 0
    stopped = record["step"]
    assert checkpoint.load(Path(record["checkpoint"]))["step"] == stopped
    assert err.count("Resume with: sandbox run --resume") == 1  # rank 0 reports, rank 1 stays silent
    assert f"--resume {run} --nproc 2" in " ".join(err.split())

    end = stopped + 12
    resumed = launch("--resume", str(run), f"train.steps={end}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming at step {stopped:,}" in resumed.stdout
    reference = tmp_path / "reference"
    assert cli.main(["run", str(recipe), f"train.steps={end}", f"run.output={reference}"]) == 0
    assert_same_trajectory(metrics(run), metrics(only_run(reference)))


FLAKY = """
import os
from dataclasses import dataclass

import torch

from sandbox import hookimpl
from sandbox.protocols import DataSplits


@dataclass
class FlakyParams:
    fail_after: int = 1000  # items rank 1 reads before its reads fail


class Flaky(torch.utils.data.Dataset):
    def __init__(self, n, fail_after):
        self.items, self.reads, self.fail_after = torch.randn(n, 2), 0, fail_after

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        self.reads += 1
        if os.environ.get("RANK") == "1" and self.reads > self.fail_after:
            raise OSError("rank 1 cannot read its data")
        return self.items[i]


@hookimpl
def register_datasets(register):
    register("flaky", lambda p: DataSplits(Flaky(256, p.fail_after), Flaky(64, 10**9), (2,)), params=FlakyParams)
"""


@pytest.mark.slow
def test_a_failure_in_one_process_stops_the_others(tmp_path):
    (tmp_path / "flaky.py").write_text(FLAKY)
    recipe = write_recipe(tmp_path)
    recipe.write_text("plugins: [./flaky.py]\n" + recipe.read_text())
    overrides = ["dataset={name: flaky, fail_after: 640}", "train.steps=100000", "train.val_every=0"]
    done = launch(str(recipe), *overrides, f"run.output={tmp_path / 'runs'}")
    assert done.returncode == 1  # rank 1's status; rank 0, waiting for it in the gradient all-reduce, is stopped
    assert "OSError: rank 1 cannot read its data" in done.stderr
    status = json.loads((only_run(tmp_path / "runs") / "status.json").read_text())
    assert status["status"] == "training"  # an unexpected error: the run stopped where it was


def workers(parent: int) -> dict[int, int]:
    """The process ids of torchrun's workers under ``parent``, by rank."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) != parent:
                continue
            env = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        ranks = [int(item[5:]) for item in env if item.startswith(b"RANK=")]
        if ranks:
            found[ranks[0]] = int(proc.name)
    assert sorted(found) == [0, 1], found
    return found


def test_a_batch_that_does_not_split_over_the_processes_is_refused(tmp_path, capsys):
    recipe = write_recipe(tmp_path)
    assert cli.main(["run", "--nproc", "2", str(recipe), "train.batch_size=63"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "recipe key 'train.batch_size': 63; expected a multiple of the 2 processes" in err
    assert not (tmp_path / "runs").exists()


def test_torchrun_processes_refuse_it_before_joining(tmp_path, monkeypatch):
    recipe = load_recipe(write_recipe(tmp_path), ["train.batch_size=63"])
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(RecipeError, match=r"'train\.batch_size': 63; expected a multiple of the 2 processes"):
        distributed.setup(recipe)
    assert not distributed.active()


@pytest.mark.parametrize("seeded", [False, True], ids=["global-rng", "generator"])
def test_parts_of_a_batch_get_the_draws_of_the_whole_batch(seeded):
    from sandbox_plugins.schedules.cosine import build
    from sandbox_plugins.schedules.params import CosineParams

    from sandbox.engine.loss import DiffusionLoss
    from sandbox.engine.precond import Preconditioned

    class Net(torch.nn.Module):
        def forward(self, x, c_noise):
            return x * c_noise[:, None, None, None]

    denoiser = Preconditioned(Net(), build(CosineParams()), "epsilon", 0.5)
    x0 = torch.randn(6, 2, 4, 4).contiguous(memory_format=torch.channels_last)

    def losses(rows, within):
        torch.manual_seed(0)
        generator = torch.Generator().manual_seed(1) if seeded else None
        return DiffusionLoss()(denoiser, x0[rows], generator, within=within)

    whole = losses(slice(0, 6), None)
    parts = [losses(slice(a, b), (a, 6)) for a, b in ((0, 2), (2, 3), (3, 6))]
    torch.testing.assert_close(torch.cat(parts), whole, rtol=0, atol=0)


def test_parts_of_a_batch_are_disjoint_and_cover_it(monkeypatch):
    monkeypatch.setattr(distributed, "active", lambda: True)
    monkeypatch.setenv("WORLD_SIZE", "3")
    for n in (3, 7, 64):
        rows = []
        for r in range(3):
            monkeypatch.setenv("RANK", str(r))
            start, stop = distributed.part(n)
            rows += range(start, stop)
            assert stop - start in (n // 3, n // 3 + 1)
        assert rows == list(range(n))


def test_outside_torchrun_everything_is_one_process():
    assert not distributed.launched() and distributed.is_main() and distributed.world_size() == 1
    x = torch.arange(6.0)
    assert distributed.shard(x) is x and distributed.all_reduce_mean(x) is x
    assert distributed.agree(0.0, 2.0) == [0.0, 2.0] and distributed.broadcast_object("a") == "a"
    net = torch.nn.Linear(2, 2)
    assert distributed.wrap(net, torch.device("cpu")) is net
