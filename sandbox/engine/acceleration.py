"""How the network runs fast: ``run.precision`` (bf16 or fp16 autocast) and ``run.compile`` (torch.compile)."""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import torch

from sandbox.errors import RecipeError

#: where torch.compile's errors come from (reported as a recipe problem, not a traceback)
COMPILER_MODULES = ("torch._dynamo", "torch._inductor")

#: ``run.precision`` -> the autocast dtype (None: plain fp32)
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """``run.precision``: bf16 or fp16 autocast on the device (fp32: none)."""
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    if not torch.amp.is_autocast_available(device.type):
        raise RecipeError(f"recipe key 'run.precision': {precision!r}, but {device.type} has no autocast; use fp32")
    if device.type == "cpu":
        warnings.warn(
            f"run.precision={precision} on the CPU is fast only where the CPU computes in {precision} natively "
            "(AMX, AVX512-BF16/FP16); elsewhere it is many times slower than fp32",
            stacklevel=2,
        )
    return torch.autocast(device.type, dtype=dtype)


def compile_network(net: torch.nn.Module) -> torch.nn.Module:
    """``run.compile``: the network compiled by :func:`torch.compile` (the module itself keeps the weights)."""
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        raise RecipeError(
            "recipe key 'run.compile': True, but torch.compile does not support this Python or platform; "
            "set run.compile=false"
        )
    compiled: torch.nn.Module = torch.compile(net)  # type: ignore[assignment]  # an OptimizedModule
    return compiled
