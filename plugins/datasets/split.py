"""The seeded train/validation split shared by the image datasets."""

from __future__ import annotations

import torch

from sandbox.errors import ParameterError


def carve_validation(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(train, val)`` of ``n`` items: ``val`` is the first ``val_size`` of a seeded permutation.

    The same ``(n, val_size, seed)`` always gives the same split, so anything
    trained on the training split (a scoring classifier, say) never sees the
    validation items. The params check ``val_size`` against the dataset's
    nominal size; this checks it against the ``n`` items actually read (a local
    copy may hold fewer), raising :class:`ParameterError` on ``val_size``.
    """
    if not 1 <= val_size < n:
        raise ParameterError("val_size", val_size, f"an integer from 1 to {n - 1} (the dataset read has {n} items)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:], perm[:val_size]
