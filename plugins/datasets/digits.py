"""Real handwritten digits, offline: scikit-learn's bundled copy of the UCI optdigits test set.

``sklearn.datasets.load_digits`` ships 1,797 8x8 grey images with pixel
values 0..16 (Alpaydin & Kaynak, 1998, UCI "Optical Recognition of
Handwritten Digits"), so the sandbox has a real image dataset without a
download. Images are scaled to [-1, 1] as ``x / 8 - 1`` and, for ``size`` other
than 8, resampled bilinearly. Samples are scored by a small classifier
trained on the training split (:mod:`sandbox_plugins.datasets.digits_classifier`).
Items are ``(x, digit)``; samples drawn for given digits are scored by the
same classifier's conditional accuracy (``evaluate_classes``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from sandbox_plugins.datasets.digits_classifier import (
    DigitClassifier,
    class_accuracy,
    digit_scores,
    get_classifier,
)
from sandbox_plugins.datasets.items import TensorItems
from sandbox_plugins.datasets.params import DigitsParams
from sandbox_plugins.datasets.split import carve_validation

from sandbox.protocols import DataSplits

NATIVE = 8  # side of the bundled images (pixels)
CLASSES = [str(digit) for digit in range(10)]


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


def _evaluate(samples: torch.Tensor, *, classifier: Callable[[], DigitClassifier]) -> dict[str, float]:
    return digit_scores(classifier(), samples)


def _evaluate_classes(
    samples: torch.Tensor, labels: torch.Tensor, *, classifier: Callable[[], DigitClassifier]
) -> dict[str, float]:
    """Conditional accuracy: the share of samples that ``evaluate``'s classifier reads as their requested digit."""
    return class_accuracy(classifier(), samples, labels)


def build(params: DigitsParams) -> DataSplits:
    """Train and validation splits of the 1,797 digits as ``[1, size, size]`` tensors in [-1, 1]."""
    images, labels = load_real_digits()
    train_idx, val_idx = carve_validation(len(images), params.val_size, params.split_seed)
    data = resize(images, params.size)
    # the scoring classifier of both evaluate and evaluate_classes: trained on the training split only
    classifier = partial(
        get_classifier, images[train_idx], labels[train_idx], key=f"seed{params.split_seed}-val{params.val_size}"
    )
    return DataSplits(
        train=TensorItems(data[train_idx].contiguous(), labels=labels[train_idx]),
        val=TensorItems(data[val_idx].contiguous(), labels=labels[val_idx]),
        shape=(1, params.size, params.size),
        evaluate=partial(_evaluate, classifier=classifier),
        classes=list(CLASSES),
        evaluate_classes=partial(_evaluate_classes, classifier=classifier),
        levels=17 if params.size == NATIVE else None,  # pixel values 0..16, unless resampled
        description=(
            f"scikit-learn 8x8 handwritten digits at {params.size}x{params.size} in [-1, 1]: "
            f"{len(train_idx)} train / {len(val_idx)} val (seed {params.split_seed})"
        ),
    )
