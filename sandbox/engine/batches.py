"""Training batches in a resumable order: through a DataLoader, or from a split kept on the device.

Both sources shuffle each epoch with ``torch.randperm`` of the loader
generator (what a DataLoader's ``RandomSampler`` does), record where the
data order stands in a :class:`DataPosition` and continue from it, so a
resumed run sees exactly the batches it would have seen. The device source
(:class:`DeviceBatches`, for splits that are :class:`sandbox.protocols.StoredItems`)
moves the stored split to the device once and indexes and decodes batches
there: no worker processes, no per-item Python, no host-to-device copy per
step. :func:`batch_source` picks one according to ``run.data_on_device``.
With ``labels`` (a class-conditional run) each batch is ``(x_0, labels)``, the
labels in the same rows (:class:`sandbox.protocols.StoredLabels` on the device).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch
from torch.utils.data import DataLoader

from sandbox.errors import ParameterError, RecipeError
from sandbox.protocols import StoredItems, StoredLabels, first_tensor, item_label

#: a training batch: the items, or ``(items, labels)`` when the source is asked for labels
Batch = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]

#: ``run.data_on_device: null`` keeps a stored split on a CUDA device when it takes at most this share of free memory
AUTO_DEVICE_SHARE = 0.25


@dataclass
class DataPosition:
    """Where the data order stands: the loader generator's state at the start of the epoch, and batches used."""

    epoch: int = 0
    position: int = 0
    epoch_state: Optional[torch.Tensor] = None


class LoaderBatches:
    """Endless batches through a shuffling DataLoader (workers, pinned memory); items are copied per step."""

    def __init__(
        self,
        split: Any,
        batch_size: int,
        generator: torch.Generator,
        device: torch.device,
        workers: int,
        labels: bool = False,
    ):
        self.device, self.generator, self.labels = device, generator, labels
        self.loader = DataLoader(
            split,
            batch_size=batch_size,
            shuffle=True,
            drop_last=len(split) >= batch_size,
            generator=generator,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=device.type == "cuda",
        )

    def __call__(self, data: DataPosition) -> Iterator[Batch]:
        """Batches from ``data`` on (which it advances): each epoch's shuffle is a function of the generator's
        state at the epoch's start, and a resumed epoch skips the batches already used."""
        while True:
            if data.epoch_state is None:
                data.epoch_state = self.generator.get_state()
            else:
                self.generator.set_state(data.epoch_state)
            iterator = iter(self.loader)
            for _ in range(data.position):
                next(iterator)
            for batch in iterator:
                data.position += 1
                x0 = first_tensor(batch).to(self.device, non_blocking=True)
                yield (x0, item_label(batch).to(self.device, non_blocking=True)) if self.labels else x0
            data.epoch, data.position, data.epoch_state = data.epoch + 1, 0, None


class DeviceBatches:
    """Endless batches of a :class:`StoredItems` split held on the device.

    Epoch ``e`` visits ``randperm(N)`` of the loader generator in batches (the
    last partial batch dropped when ``N >= batch_size``); the augmentation of
    the batch at ``(e, position)`` draws from a CPU generator seeded with
    ``(seed, e, position)``, so it needs no state of its own to resume.
    """

    def __init__(
        self,
        split: StoredItems,
        batch_size: int,
        generator: torch.Generator,
        device: torch.device,
        seed: int,
        labels: bool = False,
    ):
        self.split, self.batch_size, self.generator, self.seed = split, batch_size, generator, seed
        self.items = split.stored().to(device)
        self.labels = split.stored_labels().to(device) if labels and isinstance(split, StoredLabels) else None
        self.count = len(self.items)

    def __call__(self, data: DataPosition) -> Iterator[Batch]:
        n, b = self.count, self.batch_size
        per_epoch = n // b if n >= b else 1
        while True:
            if data.epoch_state is None:
                data.epoch_state = self.generator.get_state()
            else:
                self.generator.set_state(data.epoch_state)
            order = torch.randperm(n, generator=self.generator).to(self.items.device)
            for position in range(data.position, per_epoch):
                index = order[position * b : (position + 1) * b]
                augment = torch.Generator().manual_seed(augment_seed(self.seed, data.epoch, position))
                data.position = position + 1
                x0 = self.split.decode(self.items[index], augment)
                yield x0 if self.labels is None else (x0, self.labels[index])
            data.epoch, data.position, data.epoch_state = data.epoch + 1, 0, None


def augment_seed(seed: int, epoch: int, position: int) -> int:
    """A distinct 63-bit seed for every batch of a run (the same in every process)."""
    return ((seed * 1_000_003 + epoch) * 1_000_003 + position) % 2**63


def stored_bytes(split: StoredItems) -> int:
    items = split.stored()
    return items.numel() * items.element_size()


def keep_on_device(split: Any, device: torch.device, setting: Optional[bool], labels: bool = False) -> bool:
    """``run.data_on_device``: true, false, or null (automatic: a stored split on the CPU, or on a CUDA device
    when it takes at most :data:`AUTO_DEVICE_SHARE` of the free memory). With ``labels`` the split must store
    its labels too (:class:`sandbox.protocols.StoredLabels`)."""
    stored = isinstance(split, StoredItems) and (not labels or isinstance(split, StoredLabels))
    if setting is True and not stored:
        raise RecipeError(
            ParameterError(
                "data_on_device",
                True,
                f"a dataset whose train split is stored as one tensor (sandbox.protocols.StoredItems, and "
                f"StoredLabels in a conditional run), but {type(split).__name__} has no "
                f"{'stored()/decode()/stored_labels()' if labels else 'stored()/decode()'}; set "
                "run.data_on_device=null or false",
            ).in_section("run")
        )
    if setting is not None:
        return setting
    if not stored:
        return False
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return stored_bytes(split) <= AUTO_DEVICE_SHARE * free
    return device.type == "cpu"


def batch_source(
    split: Any,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    *,
    seed: int,
    workers: int,
    on_device: Optional[bool],
    labels: bool = False,
) -> LoaderBatches | DeviceBatches:
    """The training batch source the recipe asks for (see :func:`keep_on_device`); ``labels``: batches of
    ``(x_0, labels)``."""
    if keep_on_device(split, device, on_device, labels):
        return DeviceBatches(split, batch_size, generator, device, seed, labels)
    return LoaderBatches(split, batch_size, generator, device, workers, labels)
