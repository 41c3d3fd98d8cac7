"""Your own arrays as a dataset: N items of any shape from a ``.npy``, ``.npz``, ``.pt`` or ``.safetensors`` file.

The file is read without running code: NumPy files with ``allow_pickle=False``,
``.pt`` with ``torch.load(weights_only=True)`` (a tensor, or a dict of tensors),
``.safetensors`` with :func:`safetensors.torch.load_file`. The array ``[N, ...]``
gives ``N`` items of shape ``array.shape[1:]`` (a 1-D array gives items of shape
``(1,)``); ``labels_key`` names integer labels ``[N]`` in the same file, mapped
to ``0..K-1`` in sorted order, or indices into a ``classes`` array of names when
the file has one.

Normalisation, per feature (each element of an item), with statistics of the
training split only: ``standard`` maps each feature to mean 0 and std 1,
``minmax`` maps its training range onto [-1, 1], ``none`` keeps the values. A
feature that is constant on the training split is left unscaled (only shifted),
and the run's header says how many there are. The inverse is the splits'
``to_data``: the engine saves samples in the data's own units, and ``evaluate``
maps what it is given to them too, so every figure is in data units.

``evaluate`` gives the sliced Wasserstein distance (``swd``,
:func:`sandbox_plugins.datasets.metrics.sliced_wasserstein`) of the flattened
items to the training split (up to :data:`REFERENCE_SIZE` items, seeded), and
the mean absolute error of the per-feature means and stds (``mean_error``,
``std_error``). The reference is the training split, as FID's is, so the
held-out real items score an honest noise floor beside the samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from sandbox_plugins.datasets.items import TensorItems
from sandbox_plugins.datasets.metrics import sliced_wasserstein
from sandbox_plugins.datasets.params import TENSOR_FILE_SUFFIXES, TensorFileParams
from sandbox_plugins.datasets.split import carve_validation
from sandbox_plugins.datasets.toy2d import render as render_points

from sandbox.errors import ParameterError
from sandbox.protocols import DataSplits

# fmt: off
REFERENCE_SIZE = 10_000   # training items that evaluate compares against (a seeded subset when there are more)
CLASSES_KEY = "classes"   # an optional array of class names beside the labels
CONSTANT = 1e-12          # a feature whose spread is below this times max(|centre|, 1) counts as constant
# fmt: on


@dataclass(frozen=True)
class Normalization:
    """``x_model = (x - center) / scale`` per feature; :meth:`to_data` is its inverse."""

    center: torch.Tensor  # float64, the item shape
    scale: torch.Tensor  # float64, the item shape, > 0

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.center.to(x)) / self.scale.to(x)

    def to_data(self, x: torch.Tensor) -> torch.Tensor:
        """Items or samples as the model sees them, in the data's own units."""
        return x * self.scale.to(x) + self.center.to(x)


def fit(train: torch.Tensor, method: str) -> tuple[Normalization, torch.Tensor]:
    """The ``method`` normalisation of ``train [n, ...]`` (float64) and the mask of its constant features.

    ``standard``: centre the mean, scale by the std (``correction=0``); ``minmax``: centre ``(max + min) / 2``,
    scale ``(max - min) / 2``, so the training range maps onto [-1, 1]; ``none``: centre 0, scale 1. A constant
    feature keeps scale 1.
    """
    if method == "standard":
        center, scale = train.mean(0), train.std(0, correction=0)
    elif method == "minmax":
        low, high = train.amin(0), train.amax(0)
        center, scale = (high + low) / 2, (high - low) / 2
    else:
        center, scale = torch.zeros_like(train[0]), torch.ones_like(train[0])
    constant = scale <= CONSTANT * center.abs().clamp_min(1.0)
    return Normalization(center, torch.where(constant, torch.ones_like(scale), scale)), constant


# ------------------------------------------------------------------------------------------------ reading


def _read(path: Path) -> tuple[dict[str, Any], bool]:
    """The file's arrays by name, and whether it names them (a ``.npy`` or a bare tensor ``.pt`` does not)."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return {"": np.load(path, allow_pickle=False)}, False
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}, True
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path))), True
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(loaded, torch.Tensor):
        return {"": loaded}, False
    if isinstance(loaded, dict) and all(isinstance(k, str) for k in loaded):
        return dict(loaded), True
    raise ValueError(f"it holds a {type(loaded).__name__}; expected a tensor or a dict of tensors")


def _is_array(value: Any) -> bool:
    return isinstance(value, torch.Tensor) or (isinstance(value, np.ndarray) and value.dtype.kind in "biuf")


def _as_tensor(value: Any) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))


def _pick(arrays: dict[str, Any], named: bool, params: TensorFileParams) -> str:
    """The name of the data array: ``params.key``, else the only array (labels and class names aside), else x."""
    names = [name for name, value in arrays.items() if _is_array(value)]
    listed = ", ".join(names) or "no numeric arrays"
    if not named:
        if params.key:
            raise ParameterError("key", params.key, f"'' ({params.path} holds one unnamed array)")
        return ""
    if params.key:
        if params.key not in names:
            raise ParameterError("key", params.key, f"the name of an array in {params.path}, which holds: {listed}")
        return params.key
    candidates = [name for name in names if name not in (params.labels_key, CLASSES_KEY)]
    if len(candidates) == 1:
        return candidates[0]
    if "x" in candidates:
        return "x"
    raise ParameterError(
        "key", params.key, f"the name of the data array in {params.path} (it holds several, none named x): {listed}"
    )


def _data(value: Any, params: TensorFileParams) -> torch.Tensor:
    """The data array as float64 ``[N, ...]``, checked: numeric, at least 2 items, finite."""
    x = _as_tensor(value)
    if x.is_complex():
        raise ParameterError("path", params.path, f"a numeric array (the data is {x.dtype})")
    if x.ndim == 0:
        raise ParameterError("path", params.path, "an array [N, ...] of N items (the data is a single number)")
    x = x.to(torch.float64)
    if x.ndim == 1:
        x = x[:, None]
    if len(x) < 2:
        raise ParameterError("path", params.path, f"an array of at least 2 items (it has {len(x)})")
    bad = ~torch.isfinite(x.reshape(len(x), -1)).all(dim=1)
    if bool(bad.any()):
        first = int(bad.nonzero()[0])
        raise ParameterError(
            "path",
            params.path,
            f"finite values ({int(bad.sum())} of {len(x)} items hold NaN or inf, first item {first})",
        )
    return x


def _labels(arrays: dict[str, Any], named: bool, n: int, params: TensorFileParams) -> tuple[torch.Tensor, list[str]]:
    """Labels ``int64 [n]`` in ``0..K-1`` and the ``K`` class names."""
    if not named:
        raise ParameterError("labels_key", params.labels_key, f"'' ({params.path} holds one unnamed array)")
    if params.labels_key not in arrays or not _is_array(arrays[params.labels_key]):
        listed = ", ".join(name for name, value in arrays.items() if _is_array(value))
        raise ParameterError(
            "labels_key", params.labels_key, f"the name of the labels array in {params.path}, which holds: {listed}"
        )
    labels = _as_tensor(arrays[params.labels_key])
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ParameterError("labels_key", params.labels_key, f"integer labels (they are {labels.dtype})")
    if tuple(labels.shape) != (n,):
        raise ParameterError(
            "labels_key", params.labels_key, f"labels of shape [{n}], one per item (they are {list(labels.shape)})"
        )
    labels = labels.to(torch.int64)
    names = _class_names(arrays.get(CLASSES_KEY))
    if names is not None:
        if int(labels.min()) < 0 or int(labels.max()) >= len(names):
            raise ParameterError(
                "labels_key",
                params.labels_key,
                f"labels in [0, {len(names)}) indexing the file's {CLASSES_KEY} array "
                f"(they span {int(labels.min())} to {int(labels.max())})",
            )
        return labels, names
    values, index = torch.unique(labels, sorted=True, return_inverse=True)
    return index.to(torch.int64), [str(int(v)) for v in values]


def _class_names(value: Any) -> Optional[list[str]]:
    """The names of a ``classes`` array (strings or numbers), or None when there is none."""
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in "USiu":
        return [str(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int)) for v in value):
        return [str(v) for v in value]
    if isinstance(value, torch.Tensor) and value.ndim == 1 and not value.is_floating_point():
        return [str(int(v)) for v in value]
    return None


# ------------------------------------------------------------------------------------------------ scoring


def _evaluate(
    samples: torch.Tensor,
    *,
    normalization: Normalization,
    reference: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
) -> dict[str, float]:
    """Samples (model units) against the training split, in data units: ``swd``, ``mean_error``, ``std_error``."""
    x = normalization.to_data(samples.detach().double().cpu()).reshape(len(samples), -1)
    x = torch.nan_to_num(x, nan=0.0, posinf=1e6, neginf=-1e6)
    return {
        "swd": sliced_wasserstein(x, reference),
        "mean_error": float((x.mean(0) - mean).abs().mean()),
        "std_error": float((x.std(0, correction=0) - std).abs().mean()),
    }


# ------------------------------------------------------------------------------------------------ build


def build(params: TensorFileParams) -> DataSplits:
    """The file's items, normalised per feature on the training split, with their inverse as ``to_data``."""
    if not params.path:
        raise ParameterError("path", params.path, f"the path of your array file ({', '.join(TENSOR_FILE_SUFFIXES)})")
    path = Path(params.path).expanduser()
    if not path.is_file():
        raise ParameterError("path", params.path, f"an existing file (there is none at {path.resolve()})")
    try:
        arrays, named = _read(path)
    except Exception as exc:  # any reader's failure: a damaged file, a pickled object, a wrong format
        detail = (str(exc).splitlines() or [""])[0][:300]
        raise ParameterError(
            "path", params.path, f"a readable {path.suffix} file of arrays ({type(exc).__name__}: {detail})"
        ) from None
    if not any(_is_array(value) for value in arrays.values()):
        raise ParameterError("path", params.path, "a file holding a numeric array (it holds none)")
    key = _pick(arrays, named, params)
    x = _data(arrays[key], params)
    n, shape = len(x), tuple(x.shape[1:])
    labels: Optional[torch.Tensor] = None
    classes: Optional[list[str]] = None
    if params.labels_key:
        labels, classes = _labels(arrays, named, n, params)

    val_size = params.val_size or min(max(1, round(params.val_fraction * n)), n - 1)
    train, val = carve_validation(n, val_size, params.split_seed)
    normalization, constant = fit(x[train], params.normalize)
    items = normalization.to_model(x).float()

    reference = x[train].reshape(len(train), -1)
    mean, std = reference.mean(0), reference.std(0, correction=0)
    if len(reference) > REFERENCE_SIZE:
        pick = torch.randperm(len(reference), generator=torch.Generator().manual_seed(params.split_seed))
        reference = reference[pick[:REFERENCE_SIZE]]

    def split(index: torch.Tensor) -> TensorItems:
        return TensorItems(items[index], labels[index] if labels is not None else None)

    notes = [f"{params.normalize} normalisation per feature (training split)"]
    if int(constant.sum()) and params.normalize != "none":
        first = tuple(int(i) for i in np.unravel_index(int(constant.flatten().nonzero()[0]), shape))
        notes.append(f"{int(constant.sum())} constant feature(s) left unscaled, first {first}")
    if classes is not None:
        notes.append(f"{len(classes)} classes")
    where = f"{path.name}" + (f"[{key}]" if key else "")
    return DataSplits(
        train=split(train),
        val=split(val),
        shape=shape,
        render=render_points if shape == (2,) else None,  # images (C, H, W) get the engine's grid
        evaluate=partial(_evaluate, normalization=normalization, reference=reference, mean=mean, std=std),
        description=f"{where}: {len(train):,} train / {len(val):,} val items of shape {shape}; " + ", ".join(notes),
        classes=classes,
        to_data=normalization.to_data if params.normalize != "none" else None,
    )
