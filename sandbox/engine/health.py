"""Whether generated samples are numbers in the data's range at all: a check that no quality metric replaces.

A run that diverged at sampling time (a sliced Wasserstein distance of 785
against 0.04 for real data) still produces a "quality figure"; ranking it
beside healthy runs would be meaningless. A sample is in range when every
coordinate lies within the held-out real data's [min, max] over all
coordinates (per coordinate would flag an image whose always-black corner
pixel is off by a hair), widened by half its width on each side; samples are :data:`DIVERGED` when any is not finite
or fewer than :data:`MIN_IN_RANGE` of them are in range.
"""

from __future__ import annotations

from typing import Any

import torch

# fmt: off
MIN_IN_RANGE = 0.5   # share of in-range samples below which a run's samples count as diverged
MARGIN = 0.5         # widening of the real data's [min, max] on each side, as a share of its width
# fmt: on


def sample_health(samples: torch.Tensor, real: torch.Tensor) -> dict[str, Any]:
    """``{"finite_share", "in_range_share", "diverged"}`` of ``samples`` against held-out ``real`` items."""
    x = samples.detach().double().flatten(1)
    ref = real.detach().double().flatten(1)
    low, high = ref.min(), ref.max()
    pad = MARGIN * (high - low)
    finite = torch.isfinite(x).all(1)
    inside = finite & ((x >= low - pad) & (x <= high + pad)).all(1)
    finite_share, in_range_share = float(finite.double().mean()), float(inside.double().mean())
    return {
        "finite_share": finite_share,
        "in_range_share": in_range_share,
        "diverged": finite_share < 1.0 or in_range_share < MIN_IN_RANGE,
    }
