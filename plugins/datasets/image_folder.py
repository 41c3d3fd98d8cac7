"""A folder of your own images, searched recursively, decoded once into a memory-mapped uint8 cache.

**Files.** PNG, JPEG, WebP, BMP and TIFF (:data:`resize.EXTENSIONS`, any case) anywhere below ``root``,
except in hidden folders (a name starting with ``.``, such as the cache's own). Each is decoded with Pillow
and brought to ``channels`` and ``resolution`` by :mod:`sandbox_plugins.datasets.resize`'s rule (any mode;
the shorter side resized with antialiasing, the longer centre-cropped); items are scaled to [-1, 1].

**Crop.** ``center``: the cache holds each image at ``resolution``, and an item is that image. ``random``:
the cache holds each image at ``round(1.125 * resolution)`` (``image_cache.RANDOM_CROP_MARGIN``, by the same rule),
and each training access takes a random ``resolution x resolution`` window of it (the resize-then-random-crop
of common pipelines); validation items are its centre window. ``flip`` mirrors training items.

**Classes.** With ``classes``, the first-level subfolders holding images are the classes (sorted names),
items are ``(x, label)``, and an image directly in ``root`` is an error.

**Validation split.** A file is held out when ``sha256("<split_seed>:<relative path>")``, read as a number in
[0, 1), is below ``val_fraction``: a decision about that file alone, so adding or removing other files never
moves a validation image into training (nor the reverse). A held-out count would move files; there is none.

**Cache.** ``root/.sandbox-cache/<fingerprint>/`` holds ``images.npy`` (``uint8 [N, C, S, S]``, opened
memory-mapped, so a dataset larger than memory works) and ``index.json`` (each row's file and label, the
classes, the files that did not decode). The fingerprint is the sha256 of the sorted list of relative paths
with their sizes and modification times, and of the settings that change the stored pixels (resolution,
channels, crop, classes), so a changed, added or removed file builds a new cache; ``val_fraction``,
``split_seed``, ``flip`` and ``skip_bad`` reuse it. Where ``root`` cannot be written, the cache goes under
``$SANDBOX_CACHE/image_folder/`` (default ``~/.cache/diffusion-sandbox``). A cache is written under a
temporary name and renamed whole; old fingerprints' folders are left for the user to delete. Decoding runs
in ``workers`` processes with a progress bar. FID and KID reference statistics are cached in the same folder.

The files under ``root`` and their cache are :mod:`sandbox_plugins.datasets.image_cache`.
"""

from __future__ import annotations

import hashlib
from typing import Any, Optional, Union, cast

import numpy as np
import torch
from sandbox_plugins.datasets.image_cache import cached, list_images, stored_side
from sandbox_plugins.datasets.items import LabelledUint8Images, Uint8Images
from sandbox_plugins.datasets.params import ImageFolderParams

from sandbox.errors import ParameterError
from sandbox.protocols import DataSplits

# fmt: off
LISTED_BAD = 5               # files named in the message about files that do not decode
# fmt: on


def held_out(path: str, seed: int, fraction: float) -> bool:
    """Whether the file at relative ``path`` is held out: its hash with ``seed``, in [0, 1), is below ``fraction``."""
    digest = hashlib.sha256(f"{seed}:{path}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < fraction


# ------------------------------------------------------------------------------------------------ the splits


class CroppedImages(Uint8Images):
    """:class:`Uint8Images` stored larger than its items: item ``i`` is a ``size x size`` window of its image.

    With ``random`` the window's corner is drawn uniformly on each access (from torch's global generator, as
    ``torchvision.transforms.RandomCrop`` does), else the window is centred; ``flip`` then mirrors as
    :class:`Uint8Images` does. :meth:`decode` draws the corners, then the flips, from its ``generator``.
    """

    def __new__(
        cls,
        images: Any = None,
        indices: Any = None,
        flip: bool = False,
        labels: Optional[torch.Tensor] = None,
        size: int = 0,
        random: bool = True,
    ) -> CroppedImages:
        chosen = LabelledCroppedImages if cls is CroppedImages and labels is not None else cls
        return cast(CroppedImages, super().__new__(chosen))

    def __init__(
        self,
        images: torch.Tensor,
        indices: torch.Tensor,
        flip: bool = False,
        labels: Optional[torch.Tensor] = None,
        size: int = 0,
        random: bool = True,
    ):
        super().__init__(images, indices, flip, labels)
        self.size = size
        self.random = random

    def _corners(self, n: int, spare: int, generator: Optional[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.random:
            return torch.full((n,), spare // 2), torch.full((n,), spare // 2)
        corners = torch.randint(spare + 1, (2, n), generator=generator)
        return corners[0], corners[1]

    def _image(self, index: int) -> torch.Tensor:
        image = self.images[self.indices[index]]
        top, left = (int(c) for c in self._corners(1, image.shape[-1] - self.size, None))
        x = image[..., top : top + self.size, left : left + self.size].float().div_(127.5).sub_(1.0)
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x

    def decode(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, channels, device = len(batch), batch.shape[1], batch.device
        top, left = (c.to(device) for c in self._corners(n, batch.shape[-1] - self.size, generator))
        steps = torch.arange(self.size, device=device)
        windows = batch[
            torch.arange(n, device=device)[:, None, None, None],
            torch.arange(channels, device=device)[None, :, None, None],
            (top[:, None] + steps)[:, None, :, None],
            (left[:, None] + steps)[:, None, None, :],
        ]
        return super().decode(windows, generator)


class LabelledCroppedImages(CroppedImages, LabelledUint8Images):
    """:class:`CroppedImages` with a class label per image: item ``i`` is ``(x, int(labels[indices[i]]))``."""


def _split(
    images: torch.Tensor, indices: torch.Tensor, labels: Optional[torch.Tensor], params: ImageFolderParams, train: bool
) -> Union[Uint8Images, CroppedImages]:
    flip = params.flip and train
    if params.crop == "center":
        return Uint8Images(images, indices, flip=flip, labels=labels)
    return CroppedImages(images, indices, flip=flip, labels=labels, size=params.resolution, random=train)


def _bad_files(bad: list[list[str]]) -> str:
    named = ", ".join(f"'{path}' ({why})" for path, why in bad[:LISTED_BAD])
    more = f" and {len(bad) - LISTED_BAD} others" if len(bad) > LISTED_BAD else ""
    return f"{named}{more}"


def build(params: ImageFolderParams) -> DataSplits:
    """Train and validation splits of the images under ``params.root``, cached as uint8, in [-1, 1]."""
    listing = list_images(params)
    folder, index = cached(listing, params)
    bad = index["bad"]
    if bad and not params.skip_bad:
        raise ParameterError(
            "root",
            params.root,
            f"images that all decode, but {len(bad)} of its {len(listing.files)} image files do not: "
            f"{_bad_files(bad)}; fix or remove them, or set skip_bad=true to train without them",
        )
    if bad:  # skip_bad: said now, above the run's header, and in the description
        from sandbox.console import console

        console.print(
            f"skip_bad: skipping {len(bad)} of the {len(listing.files)} image files, which do not decode: "
            f"{_bad_files(bad)}",
            markup=False,
            highlight=False,
        )
    files = index["files"]
    val_mask = torch.tensor([held_out(path, params.split_seed, params.val_fraction) for path in files])
    n_val = int(val_mask.sum())
    if not 0 < n_val < len(files):
        raise ParameterError(
            "val_fraction",
            params.val_fraction,
            f"a share that holds out at least one of the {len(files)} images and keeps one for training, but it "
            f"holds out {n_val} (each file by a hash of its path: try another split_seed, or another val_fraction)",
        )
    images = torch.from_numpy(np.load(folder / "images.npy", mmap_mode="c"))
    labels = torch.tensor(index["labels"], dtype=torch.int64) if index["labels"] is not None else None
    train_idx, val_idx = torch.nonzero(~val_mask).flatten(), torch.nonzero(val_mask).flatten()
    side = params.resolution
    colour = "RGB" if params.channels == 3 else "grey"
    crop = (
        "centre crop"
        if params.crop == "center"
        else f"random {side}x{side} crops of {stored_side(params)}-pixel images"
    )
    extras = [crop] + (["random horizontal flips"] if params.flip else [])
    if index["classes"] is not None:
        extras.append(f"{len(index['classes'])} classes")
    if bad:
        extras.append(f"skipped {len(bad)} files that do not decode")
    return DataSplits(
        train=_split(images, train_idx, labels, params, train=True),
        val=_split(images, val_idx, labels, params, train=False),
        shape=(params.channels, side, side),
        cache_dir=str(folder),  # FID's reference statistics of the training split are cached beside the images
        classes=index["classes"],
        levels=256,  # cached as 8-bit pixels: the likelihood is in bits per dimension
        description=(
            f"image folder '{params.root}' {side}x{side} {colour} in [-1, 1]: {len(train_idx)} train / "
            f"{len(val_idx)} val images (val by a hash of each path, fraction {params.val_fraction:g}, "
            f"seed {params.split_seed}), {', '.join(extras)}"
        ),
    )
