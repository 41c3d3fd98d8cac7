"""Typed parameters of the built-in datasets (torch-free, so the CLI can list them cheaply).

Recipe values are checked against these dataclasses with ``OmegaConf.structured``;
each ``build`` then checks the ranges and raises :class:`sandbox.errors.RecipeError`
naming the recipe key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class Cifar10Params:
    """CIFAR-10 (Krizhevsky, 2009): 32x32 RGB photographs, scaled to [-1, 1]."""

    root: str = "data/cifar10"  # folder holding cifar-10-batches-py/ (path, relative to the working dir)
    download: bool = False      # fetch the official archive into `root` when files are missing
    val_size: int = 1000        # held-out validation images carved from the 50,000 training images (count)
    flip: bool = True           # random horizontal flip, training split only
    split_seed: int = 0         # seed of the permutation that picks the validation images
    verify: bool = True         # check torchvision's md5 of the official files; false loads locally written ones


@dataclass
class DigitsParams:
    """scikit-learn's bundled 8x8 handwritten digits (UCI optdigits test set, 1,797 images), in [-1, 1]."""

    size: int = 8               # side of the square image (pixels); other than 8 resamples bilinearly
    val_size: int = 297         # held-out validation images (count, of 1,797)
    split_seed: int = 0         # seed of the permutation that picks the validation images


@dataclass
class Toy2DParams:
    """Two-dimensional toy distributions for fast CPU experiments, scaled to about unit variance per axis."""

    shape: str = "moons"        # one of: moons, swissroll, checkerboard, gaussians8
    n_train: int = 20000        # training points (count)
    n_val: int = 2000           # validation points (count), an independent draw
    noise: float = 0.05         # std of isotropic Gaussian jitter added after scaling (data units)
    seed: int = 0               # seed of the draws (train, val and the evaluation reference differ)


@dataclass
class GaussianMixtureParams:
    """A mixture of isotropic Gaussians whose exact denoiser E[x0 | x_t] is known in closed form."""

    dim: int = 2                # dimension of an item (used when image_shape is empty)
    image_shape: list[int] = field(default_factory=list)  # item shape, e.g. [1, 8, 8]; [] uses dim
    components: int = 8         # number of mixture components K
    radius: float = 1.0         # 2-D: means evenly on the circle of this radius; else entries uniform in [-radius, radius]
    means: Optional[list[list[float]]] = None  # explicit means, K lists of prod(shape) numbers; overrides radius
    std: float = 0.1            # isotropic std of every component (data units)
    stds: Optional[list[float]] = None  # per-component stds (K numbers); overrides std
    weights: Optional[list[float]] = None  # mixture weights (K numbers >= 0, normalised); None = equal
    n_train: int = 20000        # training items (count)
    n_val: int = 2000           # validation items (count), an independent draw
    seed: int = 0               # seed of the draws (means, train, val and the evaluation reference differ)
