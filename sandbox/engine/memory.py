"""The C allocator keeps the memory a step frees, for the next step, instead of handing it back to the kernel.

PyTorch allocates CPU tensors with the C library's ``malloc``. glibc serves a
block of more than ``M_MMAP_THRESHOLD`` (128 KiB at first, rising to at most
32 MiB) with a fresh ``mmap`` and unmaps it when it is freed, and gives the
top of its heap back past ``M_TRIM_THRESHOLD``; every page of a new mapping
then costs a page fault on first write. A training step frees and allocates
the same activations every step, so on the CPU it pays those faults every step:
one forward and backward pass of the training benchmark's UNet
(``benchmarks/test_bench_training.py``, batch 16, 2 threads) took 47,686 minor
page faults and 0.178 s of system time, and with the setting below 1,209 and
0.006 s, with the same peak memory. PyTorch's CPU performance guide
recommends jemalloc or tcmalloc, preloaded, for the same reason; this gets the
effect from the glibc already loaded: ``mallopt(M_MMAP_MAX, 0)`` (every block
from the heap) and ``mallopt(M_TRIM_THRESHOLD, 2 GiB)`` (freed memory stays
with the process). A process's resident memory then stays at its peak until it
exits, as it does on a GPU with PyTorch's caching allocator.

``sandbox run`` and ``sandbox sample`` call :func:`keep_freed_memory` before
any work; elsewhere (another C library, another system) it does nothing.
"""

from __future__ import annotations

import ctypes
import sys

#: glibc's ``<malloc.h>`` parameter numbers
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: freed memory at the top of the heap is given back to the kernel only past this many bytes
TRIM_THRESHOLD = 2**31 - 1


def keep_freed_memory() -> bool:
    """Set glibc's ``malloc`` to keep freed memory for reuse (the module docstring); whether it was set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
        libc.gnu_get_libc_version  # noqa: B018  # glibc's own symbol: musl and others have other mallopt semantics
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
