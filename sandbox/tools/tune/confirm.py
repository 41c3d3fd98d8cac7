"""The last check before a grid replaces the sampler's own one: its gain on a large batch of new noise.

A mixture's squared error is dominated by the rare samples that end in another component than the exact
flow takes them to; a grid that lowers every other sample's error can make them more frequent, and at one
in several thousand draws a held-out batch of 1,024 does not see them (the peers benchmark found two such
grids in 72). Seeing them takes tens of thousands of draws, and a reference solution for each would cost
``REFERENCE_STEPS`` evaluations per draw. It is not needed: the two grids cost their NFE per draw, and a draw
where they nearly agree is one where their errors nearly agree, since with ``d = |x_new - x_own|^2`` per
coordinate the difference of the squared errors is at most ``d + 2 sqrt(d e_own)``. So the batch is split
into two strata (stratified sampling, Cochran 1977, *Sampling Techniques*, chapter 5):

- the ``K`` draws where the grids disagree most (``d > tau``): the reference is solved for each, and their
  error differences are exact; the draws that change component are among them;
- the others (``d <= tau``): their mean error difference is that of the held-out draws with ``d <= tau``,
  whose reference is already known.

``gain = -(sum_K delta_i / C + (C - K) / C * mean_heldout(delta | d <= tau))`` with ``delta = e_new - e_own``;
its standard error adds the spread of ``delta`` over the batch to that of the held-out stratum's mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from sandbox.engine.solve import sample_errors


@dataclass
class Confirmation:
    """A grid's gain over the own grid on the confirmation batch."""

    # fmt: off
    gain: float     # mean squared error of the own grid minus the grid's, per coordinate
    se: float       # its standard error
    draws: int      # C, the confirmation batch
    solved: int     # K, the draws whose reference was solved (the largest disagreements)
    # fmt: on

    def record(self) -> dict[str, float]:
        return asdict(self)


def confirm(
    new: torch.Tensor,
    own: torch.Tensor,
    solve: Callable[[torch.Tensor], torch.Tensor],
    heldout: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    solved: int,
) -> Confirmation:
    """The gain of the grid whose samples are ``new`` over the own grid's ``own`` (the same ``C`` draws).

    ``solve(index)`` is the reference for the draws ``index``; ``heldout`` is ``(new, own, reference)`` on the
    held-out batch; ``solved`` is ``K``.
    """
    draws = len(new)
    d = sample_errors(new, own)
    top = torch.topk(d, min(solved, draws)).indices
    reference = solve(top)
    delta_top = sample_errors(new[top], reference) - sample_errors(own[top], reference)
    held_new, held_own, held_ref = heldout
    held_d = sample_errors(held_new, held_own)
    held_delta = sample_errors(held_new, held_ref) - sample_errors(held_own, held_ref)
    rest = draws - len(top)
    if rest:
        tau = float(d[top].min())
        inside = held_delta[held_d <= tau]
        stratum = inside if len(inside) > 1 else held_delta
        mean = (float(delta_top.sum()) + rest * float(stratum.mean())) / draws
        second = (float((delta_top**2).sum()) + rest * float((stratum**2).mean())) / draws
        spread = max(second - mean**2, 0.0) / draws
        imputed = (rest / draws) ** 2 * float(stratum.var()) / len(stratum)
    else:
        mean = float(delta_top.mean())
        spread, imputed = float(delta_top.var()) / draws if draws > 1 else math.inf, 0.0
    return Confirmation(-mean, math.sqrt(spread + imputed), draws, len(top))
