"""Sample grids: the default picture of a batch of (C, H, W) samples."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F


def grid(samples: torch.Tensor, *, min_side: int = 32, padding: int = 2, nrow: int = 0) -> torch.Tensor:
    """A grid in [0, 1] of samples in [-1, 1], ``nrow`` to a row (0: square-ish); small images are enlarged
    (nearest)."""
    if samples.ndim != 4:
        raise ValueError(f"expected samples of shape (B, C, H, W), got {tuple(samples.shape)}")
    from torchvision.utils import make_grid

    x = ((samples.float().clamp(-1, 1) + 1) / 2).cpu()
    if x.shape[1] not in (1, 3):
        x = x[:, :1]
    scale = max(1, math.ceil(min_side / max(x.shape[-1], x.shape[-2])))
    if scale > 1:
        x = F.interpolate(x, scale_factor=scale, mode="nearest")
    nrow = nrow or max(1, math.ceil(math.sqrt(x.shape[0])))
    return make_grid(x, nrow=nrow, padding=padding, pad_value=1.0)


#: the most samples of one class a class grid shows in its row
CLASS_ROW = 16


def class_grid(samples: torch.Tensor, labels: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """:func:`grid` with one row per class, in the order the classes first appear: the first ``m`` samples of
    each class, ``m`` the fewest any class has (at most :data:`CLASS_ROW`)."""
    classes = list(dict.fromkeys(int(c) for c in labels.tolist()))
    per = min(CLASS_ROW, *(int((labels == c).sum()) for c in classes))
    rows = [samples[(labels == c).nonzero().flatten()[:per]] for c in classes]
    return grid(torch.cat(rows), nrow=per, **kwargs)


def save_png(image: torch.Tensor, path: str | Path) -> None:
    """Write ``image`` ([3, H, W] in [0, 1]) as a PNG, atomically (a crash leaves no torn picture)."""
    from torchvision.utils import save_image

    from sandbox.engine.rundir import atomic_write

    atomic_write(path, lambda handle: save_image(image.float().clamp(0, 1), handle, format="png"))
