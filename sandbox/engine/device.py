"""Device choice: ``auto`` picks CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import torch

from sandbox.errors import RecipeError


def pick_device(spec: str) -> torch.device:
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise RecipeError(f"recipe key 'run.device': {spec!r}, but no CUDA device is available; use auto or cpu")
    if spec == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RecipeError("recipe key 'run.device': 'mps', but Apple MPS is not available; use auto or cpu")
    try:
        return torch.device(spec)
    except RuntimeError as exc:
        raise RecipeError(f"recipe key 'run.device': {spec!r} is not a device: {exc}") from exc
