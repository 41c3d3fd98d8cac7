"""``train.lr_schedule``: the factor on the peak rate against its closed forms, and the optimizer following it."""

from __future__ import annotations

import math

import pytest
import torch

from sandbox.engine.lr_schedule import lr_factor
from sandbox.errors import ParameterError
from sandbox.sections import LR_SCHEDULES, TrainConfig


@pytest.mark.parametrize("schedule", LR_SCHEDULES)
def test_warmup_is_linear_to_the_peak(schedule):
    f = lr_factor(schedule, 10, 110)
    assert [f(s) for s in range(10)] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert f(10) == pytest.approx(1.0)


def test_constant_stays_at_the_peak():
    f = lr_factor("constant", 5, 50)
    assert all(f(s) == 1.0 for s in range(5, 200))
    assert lr_factor("constant", 0, 50)(0) == 1.0  # no warm-up: the peak from the first step


def test_cosine_is_sgdr_annealing_to_zero():
    warmup, steps = 10, 110
    f = lr_factor("cosine", warmup, steps)
    for step in range(warmup, steps + 1):
        expected = 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))
        assert f(step) == pytest.approx(expected, abs=1e-12)
    assert f(60) == pytest.approx(0.5) and f(steps) == pytest.approx(0.0, abs=1e-12)
    assert f(steps + 50) == pytest.approx(0.0, abs=1e-12)  # a resumed run past its steps stays at the end


def test_linear_falls_straight_to_zero():
    f = lr_factor("linear", 0, 100)
    assert [f(s) for s in (0, 25, 50, 100)] == pytest.approx([1.0, 0.75, 0.5, 0.0])


def test_optimizer_follows_the_schedule():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor("cosine", 2, 6))
    rates = []
    for _ in range(7):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates == pytest.approx(
        [0.1, 0.2, 0.2, 0.1 * (1 + math.cos(math.pi / 4)), 0.1, 0.1 * (1 - math.cos(math.pi / 4)), 0.0], abs=1e-12
    )


def test_unknown_schedule_names_the_key():
    with pytest.raises(ParameterError, match="lr_schedule") as err:
        TrainConfig(lr_schedule="cos")
    assert "cosine" in str(err.value)
