"""CIFAR-10 (Krizhevsky, 2009, "Learning Multiple Layers of Features from Tiny Images").

The files are the official ``cifar-10-batches-py`` pickles, fetched by
torchvision's downloader and read here by a restricted unpickler that builds
only what the format holds (a dict of strings, lists and uint8 arrays), so a
batch file can never run code, verified or not; 60,000 32x32 RGB images, of
which the 50,000 training images are used here. The validation images are carved from the
training set with a seeded permutation, so the test batch stays untouched.
Items are ``(x, label)``, the label read from each batch's ``labels`` and
named by :data:`CLASSES` (the order of ``batches.meta``'s ``label_names``).
"""

from __future__ import annotations

import _codecs
import os
import pickle
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
from sandbox_plugins.datasets.items import Uint8Images
from sandbox_plugins.datasets.params import Cifar10Params
from sandbox_plugins.datasets.resize import fit_array
from sandbox_plugins.datasets.split import carve_validation
from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import check_integrity

from sandbox.errors import ParameterError
from sandbox.protocols import DataSplits

SHAPE = (3, 32, 32)
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class UnverifiedCIFAR10(CIFAR10):
    """torchvision's ``CIFAR10`` downloader with only the per-file md5 check skipped.

    ``check_integrity(path, None)`` tests that the file exists, so the download
    step skips a folder that holds every file even when they are not
    byte-identical to the official ones (a local copy re-pickled, a subset
    written for tests). Only its download step is used; reading is :func:`read_batch`.
    """

    train_list = [[name, None] for name, _ in CIFAR10.train_list]  # noqa: RUF012 - torchvision reads these
    test_list = [[name, None] for name, _ in CIFAR10.test_list]  # noqa: RUF012
    meta = {**CIFAR10.meta, "md5": None}  # noqa: RUF012


def _latin1(text: str, encoding: str) -> bytes:
    """``_codecs.encode`` as Python 3 protocol-2 pickles use it for bytes, and nothing else."""
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r}) is not a CIFAR-10 value")
    return _codecs.encode(text, "latin1")


def _uint8_or_plain(*args: Any) -> np.dtype:
    """``numpy.dtype`` for the array dtypes a batch holds; an object dtype would build arbitrary objects."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"an array of dtype {dtype} is not a CIFAR-10 value")
    return dtype


# Every global a CIFAR-10 batch may name. The official files are Python 2 pickles of a dict of
# str keys and values, lists and uint8 numpy arrays (numpy.core.multiarray._reconstruct, ndarray,
# dtype); a copy re-pickled by Python 3 and NumPy 2 names numpy._core and _codecs.encode for bytes.
_reconstruct = cast(Callable[..., Any], np.zeros(0).__reduce__()[0])  # numpy.(_)core.multiarray._reconstruct
_ALLOWED: dict[tuple[str, str], Callable[..., Any]] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _uint8_or_plain,
    ("_codecs", "encode"): _latin1,
}


class _BatchUnpickler(pickle.Unpickler):
    """Builds only the dicts, lists, strings, numbers and arrays of the CIFAR-10 format; runs no code."""

    def find_class(self, module: str, name: str) -> Callable[..., Any]:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"it asks for {module}.{name}, which the CIFAR-10 format never holds; refused without "
                "running it (a pickle that names a function runs it when loaded)"
            ) from None


def read_batch(path: str) -> dict[str, Any]:
    """One ``cifar-10-batches-py`` file as a dict, through :class:`_BatchUnpickler` (``encoding="latin1"``)."""
    with open(path, "rb") as f:
        entry = _BatchUnpickler(f, encoding="latin1").load()
    if not isinstance(entry, dict):
        raise pickle.UnpicklingError(f"it holds a {type(entry).__name__}, not the dict of a CIFAR-10 batch")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in entry.items()}


def _read_images(folder: str) -> tuple[np.ndarray, np.ndarray]:
    """The training batches' rows stacked as ``uint8 [N, 3, 32, 32]``, and their labels as ``int64 [N]``."""
    rows, labels = [], []
    for name, _ in CIFAR10.train_list:
        try:
            batch = read_batch(os.path.join(folder, name))
            data, batch_labels = batch.get("data"), batch.get("labels")
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise _Unreadable(name, f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            described = f"{data.dtype} {list(data.shape)}" if isinstance(data, np.ndarray) else type(data).__name__
            raise _Unreadable(name, f"its 'data' is {described}, not a uint8 array of 3072-byte rows")
        rows.append(data)
        labels.append(_labels(name, batch_labels, len(data)))
    return np.concatenate(rows).reshape(-1, *SHAPE), np.concatenate(labels)


def _labels(name: str, labels: Any, rows: int) -> np.ndarray:
    """A batch's ``labels`` (a list of ints, one per row, each in [0, 10)) as ``int64 [rows]``."""
    if not isinstance(labels, (list, np.ndarray)) or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels
    ):
        raise _Unreadable(name, f"its 'labels' is {type(labels).__name__}, not a list of integers")
    values = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(values) != rows:
        raise _Unreadable(name, f"it holds {len(values)} labels for {rows} images")
    if len(values) and (values.min() < 0 or values.max() >= len(CLASSES)):
        raise _Unreadable(name, f"its labels run {values.min()}..{values.max()}, outside 0..{len(CLASSES) - 1}")
    return values


class _Unreadable(Exception):
    """A batch file that is not in the CIFAR-10 format, with why."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(f"{name}: {why}")


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
                "download=true to fetch fresh copies, or set verify=false to load locally written files as they are "
                "(verify=false skips the MD5 check only: the files are still read without running code, "
                "accepting only the dicts, lists, strings and uint8 arrays of the CIFAR-10 format)",
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


def load_images(params: Cifar10Params) -> tuple[torch.Tensor, torch.Tensor]:
    """The 50,000 training images as ``uint8 [N, 3, 32, 32]`` and their labels as ``int64 [N]`` (indices into
    :data:`CLASSES`), read without running code from the files."""
    if params.download:
        _download(params)
    _check_files(params)
    try:
        images, labels = _read_images(os.path.join(params.root, CIFAR10.base_folder))
    except _Unreadable as exc:
        raise ParameterError(
            "root",
            params.root,
            f"CIFAR-10 files in the official cifar-10-batches-py format, but the batch {exc}",
        ) from exc
    return torch.from_numpy(images), torch.from_numpy(labels)


def build(params: Cifar10Params) -> DataSplits:
    """Train and validation splits of CIFAR-10's labelled training images, scaled to [-1, 1]."""
    images, labels = load_images(params)
    train_idx, val_idx = carve_validation(len(images), params.val_size, params.split_seed)
    side = params.resolution
    if side != SHAPE[-1]:  # the rule of image_folder (resize.fit): antialiased Lanczos; 32 keeps the bytes as read
        images = torch.from_numpy(fit_array(images.numpy(), side))
    flip = ", random horizontal flips" if params.flip else ""
    return DataSplits(
        train=Uint8Images(images, train_idx, flip=params.flip, labels=labels),
        val=Uint8Images(images, val_idx, flip=False, labels=labels),
        shape=(3, side, side),
        cache_dir=params.root,  # FID's reference statistics of the training split are cached beside the files
        classes=list(CLASSES),
        levels=256,  # 8-bit pixels: the likelihood is in bits per dimension
        description=(
            f"CIFAR-10 {side}x{side} RGB in [-1, 1]: {len(train_idx)} train / {len(val_idx)} val images "
            f"(val carved from the training set, seed {params.split_seed}){flip}"
        ),
    )
