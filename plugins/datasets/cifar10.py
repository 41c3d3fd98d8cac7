"""CIFAR-10 (Krizhevsky, 2009, "Learning Multiple Layers of Features from Tiny Images").

The files are read by torchvision's own ``CIFAR10`` reader (the official
``cifar-10-batches-py`` pickles); 60,000 32x32 RGB images, of which the 50,000
training images are used here. The validation images are carved from the
training set with a seeded permutation, so the test batch stays untouched.
Labels are dropped: the sandbox's models are unconditional.
"""

from __future__ import annotations

import os
import pickle

import torch
from sandbox_plugins.datasets.items import Uint8Images
from sandbox_plugins.datasets.params import Cifar10Params
from sandbox_plugins.datasets.split import carve_validation
from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import check_integrity

from sandbox.errors import ParameterError
from sandbox.protocols import DataSplits

SHAPE = (3, 32, 32)


class UnverifiedCIFAR10(CIFAR10):
    """torchvision's ``CIFAR10`` with only the per-file md5 check skipped.

    ``check_integrity(path, None)`` tests that the file exists, so this class
    still needs every file and still reads them with torchvision's pickle
    reader; it just accepts files that are not byte-identical to the official
    ones (a local copy re-pickled, a subset written for tests).
    """

    train_list = [[name, None] for name, _ in CIFAR10.train_list]  # noqa: RUF012 - torchvision reads these
    test_list = [[name, None] for name, _ in CIFAR10.test_list]  # noqa: RUF012
    meta = {**CIFAR10.meta, "md5": None}  # noqa: RUF012


def _expected_files() -> list[tuple[str, str]]:
    """``(file name, md5)`` of every file torchvision's reader requires."""
    return [tuple(entry) for entry in CIFAR10.train_list + CIFAR10.test_list] + [
        (CIFAR10.meta["filename"], CIFAR10.meta["md5"])
    ]


def _check_files(params: Cifar10Params) -> None:
    """Raise a :class:`ParameterError` naming the field when the files are missing or fail the md5."""
    folder = os.path.join(params.root, CIFAR10.base_folder)
    missing = [name for name, _ in _expected_files() if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        found = "no CIFAR-10 files" if len(missing) == len(_expected_files()) else "incomplete CIFAR-10 files"
        raise ParameterError(
            "root",
            params.root,
            f"a folder holding {CIFAR10.base_folder}/data_batch_1..5, test_batch and batches.meta, but it has "
            f"{found} (missing: {', '.join(missing)}); set download=true to fetch them",
        )
    if params.verify:
        corrupt = [name for name, md5 in _expected_files() if not check_integrity(os.path.join(folder, name), md5)]
        if corrupt:
            raise ParameterError(
                "verify",
                params.verify,
                f"the official CIFAR-10 files, but {', '.join(corrupt)} under '{folder}' fail torchvision's "
                "md5 integrity check (corrupted, truncated or not the official files); delete them and set "
                "download=true to fetch fresh copies, or set verify=false to load locally written files as they are",
            )


def _download(params: Cifar10Params) -> None:
    reader = CIFAR10 if params.verify else UnverifiedCIFAR10
    try:
        _run_download(reader, params.root)
    except Exception as exc:  # network, disk or archive errors all mean the same to the user
        raise ParameterError(
            "download",
            params.download,
            f"a download that succeeds, but fetching CIFAR-10 into '{params.root}' failed "
            f"({type(exc).__name__}: {exc}); download {CIFAR10.url} by hand and unpack it "
            f"under '{params.root}', or check the network",
        ) from exc


def _run_download(reader: type[CIFAR10], root: str) -> None:
    """torchvision's own download step, without constructing (and reading) the dataset."""
    dataset = object.__new__(reader)
    dataset.root = os.path.expanduser(root)
    dataset.download()


def load_images(params: Cifar10Params) -> torch.Tensor:
    """The 50,000 training images as ``uint8 [N, 3, 32, 32]``, read by torchvision's reader."""
    if params.download:
        _download(params)
    _check_files(params)
    reader = CIFAR10 if params.verify else UnverifiedCIFAR10
    try:
        dataset = reader(root=params.root, train=True, download=False)
    except (RuntimeError, KeyError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise ParameterError(
            "root",
            params.root,
            f"CIFAR-10 files in the official cifar-10-batches-py format, but torchvision's reader cannot "
            f"read them ({type(exc).__name__}: {exc})",
        ) from exc
    return torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW


def build(params: Cifar10Params) -> DataSplits:
    """Train and validation splits of CIFAR-10's training images, scaled to [-1, 1]."""
    images = load_images(params)
    train_idx, val_idx = carve_validation(len(images), params.val_size, params.split_seed)
    flip = ", random horizontal flips" if params.flip else ""
    return DataSplits(
        train=Uint8Images(images, train_idx, flip=params.flip),
        val=Uint8Images(images, val_idx, flip=False),
        shape=SHAPE,
        cache_dir=params.root,  # FID's reference statistics of the training split are cached beside the files
        description=(
            f"CIFAR-10 32x32 RGB in [-1, 1]: {len(train_idx)} train / {len(val_idx)} val images "
            f"(val carved from the training set, seed {params.split_seed}){flip}"
        ),
    )
