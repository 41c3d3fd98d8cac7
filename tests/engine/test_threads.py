"""``run.threads`` and ``--threads``: the automatic choice (all idle cores, one thread on a busy machine), the same
option on every command that computes, and a resumed run keeping its first session's count."""

from __future__ import annotations

import pytest
import torch

from sandbox import cli
from sandbox.engine import device
from sandbox.engine.device import apply_threads, choose_threads


@pytest.fixture(autouse=True)
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    ("cores", "busy", "expected"),
    [
        (2, 0.0, 2),  # idle: both cores (measured 1.09 to 1.58 times as fast as one on 2 cores)
        (2, 0.4, 2),
        (2, 1.0, 1),  # one core taken by other work: one thread (two were 3 to 18 times slower there)
        (2, 6.0, 1),
        (16, 4.0, 12),  # the cores the rest of the machine leaves idle
        (16, 40.0, 1),
    ],
)
def test_automatic_threads_are_the_idle_cores(cores, busy, expected):
    assert choose_threads(0, cores=cores, busy=busy) == expected


def test_a_positive_setting_is_kept_whatever_the_load():
    assert choose_threads(3, cores=2, busy=10.0) == 3


def test_a_resumed_run_keeps_its_first_sessions_count_unless_told_otherwise(monkeypatch):
    monkeypatch.setattr(device, "busy_cores", lambda: 0.0)
    monkeypatch.setattr(device, "usable_cores", lambda: 2)
    assert apply_threads(0, previous=1) == 1 and torch.get_num_threads() == 1
    assert apply_threads(2, previous=1) == 2 and torch.get_num_threads() == 2
    assert apply_threads(0) == 2


def test_a_run_on_a_busy_machine_trains_a_tiny_model_on_one_thread(tiny_recipe, monkeypatch, capsys):
    """The default (run.threads: 0) on a loaded machine: the tiny MLP of the toy recipe trains on one thread,
    the header says so, and the checkpoint keeps the count for a resume."""
    monkeypatch.setattr(device, "usable_cores", lambda: 2)
    monkeypatch.setattr(device, "busy_cores", lambda: 1.8)  # another job on both cores
    assert cli.main(["run", str(tiny_recipe), "train.steps=4", "train.val_every=0", "train.sample_every=0"]) == 0
    assert "(1 CPU threads)" in " ".join(capsys.readouterr().out.split())
    (run,) = (tiny_recipe.parent / "runs").iterdir()
    assert torch.load(run / "checkpoints" / "final.pt", weights_only=True)["threads"] == 1
    assert cli.main(["sample", str(run), "--threads", "2", "--num", "8"]) == 0
    assert torch.get_num_threads() == 2  # --threads N is run.threads=N


@pytest.mark.parametrize("command", ["sample", "export", "tune-steps"])
def test_a_negative_thread_count_is_refused(command, tmp_path, capsys):
    extra = {"export": [str(tmp_path / "out")], "tune-steps": ["--nfe", "5", "--sampler", "ddim"]}.get(command, [])
    with pytest.raises(SystemExit) as exit:
        cli.main([command, str(tmp_path), *extra, "--threads", "-1"])
    assert exit.value.code == 2
    assert "-1: expected 0 (automatic) or a positive number of threads" in capsys.readouterr().err


def test_a_sweeps_cell_keeps_the_threads_it_was_given(monkeypatch):
    """A sweep assigns each cell process its share of the cores (or --threads); the cell's run.threads: 0 keeps
    it instead of reading a load average that lags a minute behind cells that have just started."""
    from sandbox.tools.sweep.local import assigned_threads

    monkeypatch.setattr(device, "busy_cores", lambda: 0.0)
    monkeypatch.setattr(device, "usable_cores", lambda: 8)
    assert choose_threads(0) == 8
    with assigned_threads(3):
        assert choose_threads(0) == 3 and choose_threads(5) == 5
    assert choose_threads(0) == 8


def test_run_and_sweep_take_threads_as_run_threads(tiny_recipe, capsys):
    assert cli.main(["show", str(tiny_recipe)]) == 0
    assert cli.main(["run", str(tiny_recipe), "--threads", "1", "train.steps=2", "train.val_every=0"]) == 0
    (run,) = (tiny_recipe.parent / "runs").iterdir()
    assert "threads: 1" in (run / "recipe.yaml").read_text()
    assert "(1 CPU threads)" in " ".join(capsys.readouterr().out.split())
