"""Map-style datasets whose items are plain float tensors, as the engine's DataLoader expects.

Both are :class:`sandbox.protocols.StoredItems` too, so training can keep
them on the device and batch them there. Given ``labels`` (``int64 [N]``, row
for row with the data), each returns its labelled subclass instead: item ``i``
is then ``(x, label)`` with ``label`` an ``int``, and the split is a
:class:`sandbox.protocols.StoredLabels` (:meth:`stored_labels`). An unlabelled
split has no ``stored_labels`` at all, so ``isinstance(split, StoredLabels)``
tells the two apart.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import torch
from torch.utils.data import Dataset


def _labels(labels: torch.Tensor, rows: int) -> torch.Tensor:
    """``labels`` as ``int64 [rows]``, or a ``ValueError`` saying why not."""
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    if labels.shape != (rows,):
        raise ValueError(f"labels must have shape [{rows}] (one per row), got {list(labels.shape)}")
    return labels.to(torch.int64)


class TensorItems(Dataset):
    """Rows of one float tensor: item ``i`` is ``data[i]``, or ``(data[i], labels[i])`` given ``labels``."""

    def __new__(cls, data: Any = None, labels: Optional[torch.Tensor] = None) -> TensorItems:
        # an unpickled split calls cls.__new__(cls) with no arguments: it keeps its class
        return super().__new__(LabelledTensorItems if cls is TensorItems and labels is not None else cls)

    def __init__(self, data: torch.Tensor, labels: Optional[torch.Tensor] = None):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Union[torch.Tensor, tuple[torch.Tensor, int]]:
        return self.data[index]

    def stored(self) -> torch.Tensor:
        return self.data

    def decode(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return batch.float()


class LabelledTensorItems(TensorItems):
    """:class:`TensorItems` with a class label per row: item ``i`` is ``(data[i], int(labels[i]))``."""

    def __init__(self, data: torch.Tensor, labels: Optional[torch.Tensor] = None):
        super().__init__(data)
        if labels is None:
            raise ValueError("LabelledTensorItems needs labels")
        self.labels = _labels(labels, len(data))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.data[index], int(self.labels[index])

    def stored_labels(self) -> torch.Tensor:
        """``int64 [N]``: the label of each row of :meth:`stored`."""
        return self.labels


class Uint8Images(Dataset):
    """Selected images of a ``uint8 [N, C, H, W]`` tensor, scaled to [-1, 1] on access.

    ``x = 2 * (u / 255) - 1``, so 0 maps to -1.0 and 255 to 1.0 exactly. With
    ``flip`` each access mirrors the image left-right with probability 1/2,
    drawn from torch's global generator as ``torchvision.transforms.RandomHorizontalFlip``
    does (the DataLoader seeds it per worker). ``labels`` (``int64 [N]``) are
    row for row with ``images``, not with ``indices``: item ``i`` is then
    ``(x, labels[indices[i]])``.
    """

    def __new__(
        cls, images: Any = None, indices: Any = None, flip: bool = False, labels: Optional[torch.Tensor] = None
    ) -> Uint8Images:
        return super().__new__(LabelledUint8Images if cls is Uint8Images and labels is not None else cls)

    def __init__(
        self, images: torch.Tensor, indices: torch.Tensor, flip: bool = False, labels: Optional[torch.Tensor] = None
    ):
        self.images = images
        self.indices = indices
        self.flip = flip

    def __len__(self) -> int:
        return len(self.indices)

    def _image(self, index: int) -> torch.Tensor:
        x = self.images[self.indices[index]].float().div_(127.5).sub_(1.0)
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x

    def __getitem__(self, index: int) -> Union[torch.Tensor, tuple[torch.Tensor, int]]:
        return self._image(index)

    def stored(self) -> torch.Tensor:
        return self.images[self.indices]

    def decode(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The same scaling, and each image mirrored with probability 1/2 (one draw per image from ``generator``)."""
        x = batch.float().div_(127.5).sub_(1.0)
        if self.flip:
            mirror = (torch.rand(len(batch), generator=generator) < 0.5).to(x.device, non_blocking=True)
            x = torch.where(mirror[:, None, None, None], x.flip(-1), x)
        return x


class LabelledUint8Images(Uint8Images):
    """:class:`Uint8Images` with a class label per image: item ``i`` is ``(x, int(labels[indices[i]]))``."""

    def __init__(
        self, images: torch.Tensor, indices: torch.Tensor, flip: bool = False, labels: Optional[torch.Tensor] = None
    ):
        super().__init__(images, indices, flip)
        if labels is None:
            raise ValueError("LabelledUint8Images needs labels")
        self.labels = _labels(labels, len(images))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self._image(index), int(self.labels[self.indices[index]])

    def stored_labels(self) -> torch.Tensor:
        """``int64 [N]``: the label of each row of :meth:`stored`."""
        return self.labels[self.indices]
