"""Training that diverges stops with Diverged between log steps, naming train.lr, and writes nothing more."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sandbox import cli
from sandbox.engine import training


def _only_run(tmp_path: Path) -> Path:
    (run,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    return run


def _assert_stopped(tmp_path: Path, err: str) -> None:
    assert "training diverged" in err and "train.lr" in err
    run = _only_run(tmp_path)
    assert json.loads((run / "status.json").read_text())["status"] == "diverged"
    assert not (run / "checkpoints" / "final.pt").exists() and not (run / "summary.json").exists()


@pytest.mark.parametrize("lr", ["1e2", "1e3"])
def test_a_loss_far_above_its_start_stops_the_run(tiny_recipe, tmp_path, capsys, one_thread, lr):
    """lr=1e2 and 1e3 keep the loss tens to billions of times its first value, without a non-finite value."""
    assert cli.main(["run", str(tiny_recipe), f"train.lr={lr}"]) == 1
    _assert_stopped(tmp_path, capsys.readouterr().err)


def test_non_finite_weights_after_the_last_loss_stop_the_run(tiny_recipe, tmp_path, capsys, monkeypatch, one_thread):
    """Weights that turn non-finite in the final step leave every loss finite; the run must still stop."""
    real_step = training.Trainer.step

    def step(self, x0, labels=None):
        loss = real_step(self, x0, labels)
        if self.state.step + 1 == self.steps:  # the final step: no later loss would show it
            with torch.no_grad():
                next(self.net.parameters()).fill_(float("inf"))
        return loss

    monkeypatch.setattr(training.Trainer, "step", step)
    assert cli.main(["run", str(tiny_recipe)]) == 1
    err = capsys.readouterr().err
    _assert_stopped(tmp_path, err)
    assert "weights" in err
