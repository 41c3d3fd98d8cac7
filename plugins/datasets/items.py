"""Map-style datasets whose items are plain float tensors, as the engine's DataLoader expects.

Both are :class:`sandbox.protocols.StoredItems` too, so training can keep
them on the device and batch them there.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class TensorItems(Dataset):
    """Rows of one float tensor: item ``i`` is ``data[i]``."""

    def __init__(self, data: torch.Tensor):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.data[index]

    def stored(self) -> torch.Tensor:
        return self.data

    def decode(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return batch.float()


class Uint8Images(Dataset):
    """Selected images of a ``uint8 [N, C, H, W]`` tensor, scaled to [-1, 1] on access.

    ``x = 2 * (u / 255) - 1``, so 0 maps to -1.0 and 255 to 1.0 exactly. With
    ``flip`` each access mirrors the image left-right with probability 1/2,
    drawn from torch's global generator as ``torchvision.transforms.RandomHorizontalFlip``
    does (the DataLoader seeds it per worker).
    """

    def __init__(self, images: torch.Tensor, indices: torch.Tensor, flip: bool = False):
        self.images = images
        self.indices = indices
        self.flip = flip

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> torch.Tensor:
        x = self.images[self.indices[index]].float().div_(127.5).sub_(1.0)
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x

    def stored(self) -> torch.Tensor:
        return self.images[self.indices]

    def decode(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The same scaling, and each image mirrored with probability 1/2 (one draw per image from ``generator``)."""
        x = batch.float().div_(127.5).sub_(1.0)
        if self.flip:
            mirror = (torch.rand(len(batch), generator=generator) < 0.5).to(x.device, non_blocking=True)
            x = torch.where(mirror[:, None, None, None], x.flip(-1), x)
        return x
