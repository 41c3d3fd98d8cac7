"""Typed parameters of the built-in datasets (torch-free, so the CLI can list them cheaply).

Recipe values are checked against these dataclasses with ``OmegaConf.structured``,
and each dataclass checks its own ranges in ``__post_init__`` (:mod:`sandbox.params`),
so a bad value fails when the recipe is loaded. What needs the files on disk
(CIFAR-10's, which may be a smaller local copy) is checked when the dataset is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from sandbox.errors import ParameterError
from sandbox.params import at_least, between, one_of, positive

# fmt: off
CIFAR10_TRAIN = 50_000       # training images of the official CIFAR-10 files
CIFAR10_MAX_RESOLUTION = 512 # largest accepted cifar10 `resolution` (pixels; 50,000 images of 3 x 512 x 512 bytes)
DIGITS = 1_797               # images in scikit-learn's bundled digits
DIGITS_MAX_SIZE = 256        # largest accepted digits `size` (pixels)
TOY_SHAPES = ("moons", "swissroll", "checkerboard", "gaussians8")
# fmt: on


def _integer_in(obj: Any, key: str, low: int, high: int, why: str) -> None:
    """``obj.<key>`` is an integer from ``low`` to ``high`` (``why`` says where the bounds come from)."""
    value = getattr(obj, key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ParameterError(key, value, f"an integer from {low} to {high} ({why})")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _per_component(obj: Any, key: str) -> list:
    """``obj.<key>``, a list with one entry per mixture component (``obj.components``)."""
    values = getattr(obj, key)
    if len(values) != obj.components:
        raise ParameterError(
            f"{key}, components",
            (len(values), obj.components),
            f"one entry of {key} per component: {len(values)} entries, {obj.components} components",
        )
    return values


@dataclass
class Cifar10Params:
    """CIFAR-10 (Krizhevsky, 2009): 32x32 RGB photographs, scaled to [-1, 1]."""

    # fmt: off
    root: str = "data/cifar10"  # folder holding cifar-10-batches-py/ (path, relative to the working dir)
    download: bool = False      # fetch the official archive into `root` when files are missing
    val_size: int = 1000        # held-out validation images carved from the 50,000 training images (count)
    flip: bool = True           # random horizontal flip, training split only
    split_seed: int = 0         # seed of the permutation that picks the validation images
    verify: bool = True         # check torchvision's md5 of the official files; false loads locally written ones
    resolution: int = 32        # side of the square images (pixels); other than 32 resizes (antialiased Lanczos)
    # fmt: on

    def __post_init__(self) -> None:
        _integer_in(self, "val_size", 1, CIFAR10_TRAIN - 1, f"CIFAR-10 has {CIFAR10_TRAIN} training images")
        _integer_in(self, "resolution", 1, CIFAR10_MAX_RESOLUTION, "pixels; 32 is native")


@dataclass
class ImageFolderParams:
    """A folder of your own images (PNG, JPEG, WebP, BMP, TIFF), resized to a square and cached as uint8."""

    # fmt: off
    root: str = "data/my_images"  # folder searched recursively for images (path, relative to the working dir)
    resolution: int = 64        # side of the square items (pixels): shorter side resized, then cropped
    channels: int = 3           # 1 (grey) or 3 (RGB); every image is converted to it
    crop: str = "center"        # "center", or "random": a random window of an image stored 1.125x larger
    flip: bool = False          # random horizontal flip, training split only
    classes: bool = False       # first-level subfolders are classes (sorted names); items are (x, label)
    val_fraction: float = 0.05  # share of images held out, chosen by a hash of each path: stable when files are added
    split_seed: int = 0         # seed mixed into that hash (another seed, another validation set)
    skip_bad: bool = False      # skip files that do not decode (counted in the run's header) instead of failing
    workers: int = 0            # decoding processes when the cache is built; 0 = every usable core
    # fmt: on

    def __post_init__(self) -> None:
        if not isinstance(self.root, str) or not self.root.strip():
            raise ParameterError("root", self.root, "the path of a folder of images")
        at_least(self, "resolution", 1)
        if isinstance(self.channels, bool) or self.channels not in (1, 3):
            raise ParameterError("channels", self.channels, "1 (grey) or 3 (RGB)")
        one_of(self, "crop", ("center", "random"))
        between(self, "val_fraction", 0.0, 1.0, low_open=True, high_open=True)
        at_least(self, "workers", 0)


@dataclass
class DigitsParams:
    """scikit-learn's bundled 8x8 handwritten digits (UCI optdigits test set, 1,797 images), in [-1, 1]."""

    # fmt: off
    size: int = 8               # side of the square image (pixels); other than 8 resamples bilinearly
    val_size: int = 297         # held-out validation images (count, of 1,797)
    split_seed: int = 0         # seed of the permutation that picks the validation images
    # fmt: on

    def __post_init__(self) -> None:
        _integer_in(self, "size", 2, DIGITS_MAX_SIZE, "pixels; 8 is native")
        _integer_in(self, "val_size", 1, DIGITS - 1, f"the dataset has {DIGITS} images")


@dataclass
class Toy2DParams:
    """Two-dimensional toy distributions for fast CPU experiments, scaled to about unit variance per axis."""

    # fmt: off
    shape: str = "moons"        # one of: moons, swissroll, checkerboard, gaussians8
    n_train: int = 20000        # training points (count)
    n_val: int = 2000           # validation points (count), an independent draw
    noise: float = 0.05         # std of isotropic Gaussian jitter added after scaling (data units)
    seed: int = 0               # seed of the draws (train, val and the evaluation reference differ)
    # fmt: on

    def __post_init__(self) -> None:
        one_of(self, "shape", TOY_SHAPES)
        at_least(self, "n_train", 1)
        at_least(self, "n_val", 1)
        at_least(self, "noise", 0.0)


@dataclass
class GaussianMixtureParams:
    """A mixture of isotropic Gaussians whose exact denoiser E[x0 | x_t] is known in closed form."""

    # fmt: off
    dim: int = 2                # dimension of an item (used when image_shape is empty)
    image_shape: list[int] = field(default_factory=list)  # item shape, e.g. [1, 8, 8]; [] uses dim
    components: int = 8         # number of mixture components K
    radius: float = 1.0         # 2-D: means evenly on this circle; else entries uniform in [-radius, radius]
    means: Optional[list[list[float]]] = None  # explicit means, K lists of prod(shape) numbers; overrides radius
    std: float = 0.1            # isotropic std of every component (data units)
    stds: Optional[list[float]] = None  # per-component stds (K numbers); overrides std
    weights: Optional[list[float]] = None  # mixture weights (K numbers >= 0, normalised); None = equal
    n_train: int = 20000        # training items (count)
    n_val: int = 2000           # validation items (count), an independent draw
    seed: int = 0               # seed of the draws (means, train, val and the evaluation reference differ)
    # fmt: on

    @property
    def shape(self) -> tuple[int, ...]:
        """The item shape: ``image_shape``, or ``(dim,)`` when it is empty."""
        return tuple(self.image_shape) if self.image_shape else (self.dim,)

    def __post_init__(self) -> None:
        at_least(self, "dim", 1)
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in self.image_shape):
            raise ParameterError("image_shape", self.image_shape, "a list of integer sizes >= 1, or [] to use dim")
        for key in ("components", "n_train", "n_val"):
            at_least(self, key, 1)
        at_least(self, "radius", 0.0)
        positive(self, "std")
        size = math.prod(self.shape)
        for i, mean in enumerate(_per_component(self, "means") if self.means is not None else []):
            if len(mean) != size or not all(_finite(x) for x in mean):
                raise ParameterError(f"means[{i}]", mean, f"{size} finite numbers (an item's shape is {self.shape})")
        for i, std in enumerate(_per_component(self, "stds") if self.stds is not None else []):
            if not (_finite(std) and std > 0):
                raise ParameterError(f"stds[{i}]", std, "a finite std > 0")
        if self.weights is not None:
            for i, weight in enumerate(_per_component(self, "weights")):
                if not (_finite(weight) and weight >= 0):
                    raise ParameterError(f"weights[{i}]", weight, "a finite weight >= 0")
            if not sum(self.weights) > 0:
                raise ParameterError("weights", self.weights, "weights >= 0, not all zero")


TENSOR_FILE_SUFFIXES = (".npy", ".npz", ".pt", ".safetensors")
NORMALIZATIONS = ("standard", "minmax", "none")


@dataclass
class TensorFileParams:
    """Your own arrays (vectors, sequences, images) from a .npy, .npz, .pt or .safetensors file."""

    # fmt: off
    path: str = ""              # the file (.npy, .npz, .pt or .safetensors), [N, ...]: N items of any shape
    key: str = ""               # the array's name in a .npz, .safetensors or dict .pt; "" = the only array, else x
    labels_key: str = ""        # integer class labels [N] in the same file (their name); "" = unlabelled
    normalize: str = "standard"  # per feature: standard (mean 0, std 1), minmax ([-1, 1]) or none; training split
    val_fraction: float = 0.1   # share of the items held out for validation (when val_size is 0)
    val_size: int = 0           # held-out items (count); 0 = val_fraction of them
    split_seed: int = 0         # seed of the permutation that picks the validation items
    # fmt: on

    def __post_init__(self) -> None:
        if self.path and not str(self.path).lower().endswith(TENSOR_FILE_SUFFIXES):
            raise ParameterError("path", self.path, f"a file ending in {', '.join(TENSOR_FILE_SUFFIXES)}")
        one_of(self, "normalize", NORMALIZATIONS)
        between(self, "val_fraction", 0.0, 1.0, low_open=True, high_open=True)
        at_least(self, "val_size", 0)
