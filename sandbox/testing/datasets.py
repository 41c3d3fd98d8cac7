"""``check_dataset``: a dataset against :class:`sandbox.protocols.DataSplits`."""

from __future__ import annotations

import math
from typing import Any

import torch

from sandbox.protocols import DataSplits, first_tensor
from sandbox.registry import Registry
from sandbox.testing.build import built, expect


def check_dataset(
    dataset: Any, params: Any = None, *, registry: Registry | None = None, items: int = 4, evaluate: bool = True
) -> DataSplits:
    """Check a dataset (a registered name or built :class:`DataSplits`); ``evaluate=False`` skips scoring."""
    splits, label = built("dataset", dataset, params, registry)
    expect(
        isinstance(splits, DataSplits),
        label,
        f"build(params) returned {type(splits).__name__}; expected sandbox.protocols.DataSplits",
    )
    shape = splits.shape
    expect(
        isinstance(shape, tuple) and shape and all(isinstance(s, int) and s > 0 for s in shape),
        label,
        f"shape {shape!r} must be a tuple of positive ints",
    )
    for split_name in ("train", "val"):
        split = getattr(splits, split_name)
        expect(len(split) > 0, label, f"the {split_name} split is empty")
        for i in range(min(items, len(split))):
            item = first_tensor(split[i])
            expect(
                isinstance(item, torch.Tensor) and item.is_floating_point(),
                label,
                f"{split_name}[{i}] is {type(item).__name__}; expected a float tensor (or a tuple starting with one)",
            )
            expect(
                tuple(item.shape) == shape, label, f"{split_name}[{i}] has shape {tuple(item.shape)}; expected {shape}"
            )
            expect(bool(torch.isfinite(item).all()), label, f"{split_name}[{i}] is not finite")
    batch = torch.stack([first_tensor(splits.val[i]) for i in range(min(64, len(splits.val)))]).float()
    if splits.render is not None:
        picture = splits.render(batch[:16])
        expect(
            isinstance(picture, torch.Tensor) and picture.ndim == 3 and picture.shape[0] == 3,
            label,
            f"render(samples) returned {tuple(getattr(picture, 'shape', ()))}; expected a [3, H, W] tensor",
        )
        expect(bool((picture >= 0).all() and (picture <= 1).all()), label, "render(samples) must lie in [0, 1]")
    if splits.evaluate is not None and evaluate:
        scores = splits.evaluate(batch)
        expect(isinstance(scores, dict) and scores, label, "evaluate(samples) must return a non-empty dict")
        for key, value in scores.items():
            expect(
                isinstance(key, str)
                and isinstance(value, (int, float))
                and not isinstance(value, bool)
                and math.isfinite(value),
                label,
                f"evaluate(samples)[{key!r}] = {value!r}; expected a finite float",
            )
    if splits.exact_x0 is not None:
        alpha = torch.full((len(batch),) + (1,) * len(shape), 0.8)
        out = splits.exact_x0(batch, alpha, (1 - alpha**2).sqrt())
        expect(
            isinstance(out, torch.Tensor) and out.shape == batch.shape and bool(torch.isfinite(out).all()),
            label,
            "exact_x0(x_t, alpha, sigma) must be finite and keep x_t's shape",
        )
    return splits
