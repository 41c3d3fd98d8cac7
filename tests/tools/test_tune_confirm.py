"""The confirmation batch (sandbox.tools.tune.confirm): the stratified estimate of a grid's gain over the own grid,
against the exact mean over the batch."""

from __future__ import annotations

import math

import pytest
import torch

from sandbox.tools.tune.confirm import confirm


def _draws(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _errors(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return ((x - ref) ** 2).mean(1)


def test_with_every_draw_solved_the_gain_is_the_exact_mean_and_its_standard_error():
    ref, held_ref = _draws(50, 0), _draws(20, 1)
    own, new = ref + 0.1 * _draws(50, 2), ref + 0.05 * _draws(50, 3)
    held = (held_ref + 0.05 * _draws(20, 4), held_ref + 0.1 * _draws(20, 5), held_ref)
    check = confirm(new, own, lambda index: ref[index], held, solved=50)
    diff = _errors(own, ref) - _errors(new, ref)
    assert check.gain == pytest.approx(float(diff.mean()), rel=1e-12)
    assert check.se == pytest.approx(float(diff.std()) / math.sqrt(50), rel=1e-12)
    assert check.draws == 50 and check.solved == 50


def test_rare_changes_of_component_are_found_among_the_largest_disagreements_and_counted_exactly():
    """A grid that agrees with the own grid on every draw but three, where it ends in another component: the
    reference is solved for the K largest disagreements only, and the gain is the exact mean, a loss."""
    n, far = 10_000, 3.0
    ref, held_ref = _draws(n, 0), _draws(500, 1)
    own = ref + 0.01 * _draws(n, 2)
    new = own.clone()
    new[[17, 4_000, 9_999]] += far  # three draws change component
    solved: list[int] = []

    def solve(index: torch.Tensor) -> torch.Tensor:
        solved.extend(index.tolist())
        return ref[index]

    held_own = held_ref + 0.01 * _draws(500, 3)
    check = confirm(new, own, solve, (held_own.clone(), held_own, held_ref), solved=16)
    exact = float((_errors(own, ref) - _errors(new, ref)).mean())
    assert len(solved) == 16 and {17, 4_000, 9_999} <= set(solved)
    assert check.gain == pytest.approx(exact, rel=1e-12) and check.gain < 0  # about -3 * 9 / 10,000
    assert check.se > 0


def test_the_unsolved_draws_take_the_held_out_draws_that_disagree_as_little():
    """Draws the reference is not solved for count with the mean gain of the held-out draws whose disagreement is
    no larger; here every unsolved and held-out draw gains the same, so the estimate is exact."""
    n = 1_000
    ref, held_ref = _draws(n, 0), _draws(200, 1)
    own, held_own = ref + 0.2, held_ref + 0.2  # the own grid: off by 0.2 in every coordinate
    new, held_new = ref + 0.1, held_ref + 0.1  # the grid: by 0.1, so each draw gains 0.04 - 0.01
    new[:5] = ref[:5] - 2.0  # five draws that lose by far: the largest disagreements
    check = confirm(new, own, lambda index: ref[index], (held_new, held_own, held_ref), solved=10)
    exact = float((_errors(own, ref) - _errors(new, ref)).mean())
    assert check.gain == pytest.approx(exact, rel=1e-9)
    assert check.gain == pytest.approx((995 * 0.03 + 5 * (0.04 - 4.0)) / n, rel=1e-9)
