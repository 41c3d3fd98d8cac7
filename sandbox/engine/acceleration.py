"""How the network runs fast: ``run.precision`` (bf16 or fp16 autocast) and ``run.compile`` (torch.compile)."""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from sandbox.errors import RecipeError

#: where torch.compile's errors come from (reported as a recipe problem, not a traceback)
COMPILER_MODULES = ("torch._dynamo", "torch._inductor")

#: ``run.precision`` -> the autocast dtype (None: plain fp32)
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

#: ``run.precision`` -> the CPU feature flags (as /proc/cpuinfo names them) of a CPU that computes in it natively
NATIVE_CPU_FLAGS = {"bf16": frozenset({"avx512_bf16", "amx_bf16"}), "fp16": frozenset({"avx512_fp16", "amx_fp16"})}

#: flags torch probes itself, where /proc/cpuinfo is missing (private torch.cpu functions, absent in some versions)
TORCH_CPU_PROBES = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_fp16": "_is_amx_fp16_supported"}


@functools.cache
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags: those /proc/cpuinfo lists and those torch detects (empty where neither tells)."""
    flags: set[str] = set()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
            break
    for flag, probe in TORCH_CPU_PROBES.items():
        is_supported = getattr(torch.cpu, probe, None)
        if is_supported is not None and is_supported():
            flags.add(flag)
    return frozenset(flags)


def cpu_computes_natively(precision: str, flags: Iterable[str] | None = None) -> bool:
    """Whether a CPU with these feature flags (default: this one's) computes in ``precision`` natively."""
    return not NATIVE_CPU_FLAGS[precision].isdisjoint(cpu_flags() if flags is None else flags)


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """``run.precision``: bf16 or fp16 autocast on the device (fp32: none)."""
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    if not torch.amp.is_autocast_available(device.type):
        raise RecipeError(f"recipe key 'run.precision': {precision!r}, but {device.type} has no autocast; use fp32")
    if device.type == "cpu" and not cpu_computes_natively(precision):
        native = ", ".join(sorted(NATIVE_CPU_FLAGS[precision]))
        warnings.warn(
            f"run.precision={precision} on the CPU is fast only where the CPU computes in {precision} natively "
            f"({native}), which this one does not report; here it is many times slower than fp32",
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
