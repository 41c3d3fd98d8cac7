"""Real handwritten digits, offline: scikit-learn's bundled copy of the UCI optdigits test set.

``sklearn.datasets.load_digits`` ships 1,797 8x8 grey images with pixel
values 0..16 (Alpaydin & Kaynak, 1998, UCI "Optical Recognition of
Handwritten Digits"), so the sandbox has a real image dataset without a
download. Images are scaled to [-1, 1] as ``x / 8 - 1`` and, for ``size`` other
than 8, resampled bilinearly. Samples are scored by a small classifier
trained on the training split (:mod:`sandbox_plugins.datasets.digits_classifier`).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from sandbox_plugins.datasets.digits_classifier import digit_scores, get_classifier
from sandbox_plugins.datasets.items import TensorItems
from sandbox_plugins.datasets.params import DigitsParams
from sandbox_plugins.datasets.split import carve_validation

from sandbox.protocols import DataSplits

NATIVE = 8  # side of the bundled images (pixels)


def load_real_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as ``float [N, 1, 8, 8]`` in [-1, 1] and their ``int64`` labels."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn, no download

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).div(8.0).sub(1.0).unsqueeze(1)
    return images, torch.tensor(bunch.target, dtype=torch.int64)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resampling of ``[N, 1, H, W]`` to ``size x size``, kept within [-1, 1]."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out.clamp(-1.0, 1.0)


def _evaluate(
    samples: torch.Tensor, *, train_images: torch.Tensor, train_labels: torch.Tensor, key: str
) -> dict[str, float]:
    return digit_scores(get_classifier(train_images, train_labels, key=key), samples)


def build(params: DigitsParams) -> DataSplits:
    """Train and validation splits of the 1,797 digits as ``[1, size, size]`` tensors in [-1, 1]."""
    images, labels = load_real_digits()
    train_idx, val_idx = carve_validation(len(images), params.val_size, params.split_seed)
    data = resize(images, params.size)
    evaluate = partial(
        _evaluate,
        train_images=images[train_idx],
        train_labels=labels[train_idx],
        key=f"seed{params.split_seed}-val{params.val_size}",
    )
    return DataSplits(
        train=TensorItems(data[train_idx].contiguous()),
        val=TensorItems(data[val_idx].contiguous()),
        shape=(1, params.size, params.size),
        evaluate=evaluate,
        description=(
            f"scikit-learn 8x8 handwritten digits at {params.size}x{params.size} in [-1, 1]: "
            f"{len(train_idx)} train / {len(val_idx)} val (seed {params.split_seed})"
        ),
    )
