"""The seeded train/validation split shared by the image datasets."""

from __future__ import annotations

import torch

from sandbox.errors import RecipeError


def carve_validation(n: int, val_size: int, seed: int, *, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(train, val)`` of ``n`` items: ``val`` is the first ``val_size`` of a seeded permutation.

    The same ``(n, val_size, seed)`` always gives the same split, so anything
    trained on the training split (a scoring classifier, say) never sees the
    validation items. ``key`` names the recipe key of ``val_size`` in errors.
    """
    if not 1 <= val_size < n:
        raise RecipeError(
            f"recipe key '{key}': {val_size} is not a usable validation size; "
            f"expected 1 to {n - 1} (the dataset has {n} items)"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:], perm[:val_size]
