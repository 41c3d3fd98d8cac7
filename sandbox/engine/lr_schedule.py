"""The learning rate over a run (``train.lr_schedule``): a linear warm-up, then constant, cosine or linear decay.

The factor multiplies ``train.lr`` at each optimizer step (a ``LambdaLR``). ``constant`` is DDPM's recipe (Ho et
al. 2020: warm-up, then the peak rate to the end). ``cosine`` is SGDR's annealing without restarts (Loshchilov &
Hutter 2017), ``0.5 (1 + cos(pi s))`` over the fraction ``s`` of the steps after the warm-up; ``linear`` falls
straight to zero over the same steps. A decayed rate ends a short run on its best weights rather than on noisy
ones, which matters most where the EMA is short.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def lr_factor(schedule: str, warmup_steps: int, steps: int) -> Callable[[int], float]:
    """The factor on the peak rate at optimizer step ``step`` (0-based), for ``steps`` steps in all.

    ``schedule`` is one of :data:`sandbox.sections.LR_SCHEDULES`, which ``train.lr_schedule`` is checked against.
    """

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant" or steps <= warmup_steps:
            return 1.0
        s = min(1.0, (step - warmup_steps) / (steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * s)) if schedule == "cosine" else 1.0 - s

    return factor
