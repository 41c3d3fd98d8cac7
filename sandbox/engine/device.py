"""Device choice (``auto`` picks CUDA, then Apple MPS, then the CPU) and the CPU threads torch uses.

``run.threads: 0`` (the default, and ``--threads 0``) chooses the threads from
the machine: every core this process may use when the machine is idle, and
only the cores the rest of the machine leaves idle when it is busy (the
one-minute load average), at least one. Measured on 2 cores
(``docs/benchmarks.md#cpu-threads``): idle, two threads are 1.09 to 1.58 times
as fast as one; beside other work, two threads were 3 to 18 times slower than
one, the oversubscribed cores waiting on each other. The choice is reported in
the run's header and kept in its checkpoints: thread counts change float
rounding (about 1e-8), so a resumed run takes the count its first session used.
"""

from __future__ import annotations

import os
from typing import Optional

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


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask: a SLURM or taskset limit counts)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def busy_cores() -> float:
    """How many cores the rest of the machine keeps busy: the one-minute load average (0 where unknown)."""
    try:
        return max(0.0, os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


#: the threads a sweep gives its cell process (``cores // jobs``, or ``--threads``), which the automatic choice
#: keeps: the load average lags a minute behind cells that have just started
assigned: Optional[int] = None


def choose_threads(setting: int, *, cores: Optional[int] = None, busy: Optional[float] = None) -> int:
    """``run.threads``: ``setting`` when positive; 0 (automatic): the count a sweep assigned this process, else the
    usable cores that the load average leaves idle, rounded to the nearest, at least 1 (all of them on an idle
    machine, one on a busy one)."""
    if setting > 0:
        return setting
    if assigned is not None and cores is None and busy is None:
        return assigned
    cores = usable_cores() if cores is None else cores
    busy = busy_cores() if busy is None else busy
    return max(1, min(cores, int(cores - busy + 0.5)))


def apply_threads(setting: int, previous: Optional[int] = None) -> int:
    """Set torch's CPU threads from ``run.threads`` (or ``previous``, the count a resumed run's first session
    chose, when the setting is automatic) and return the count."""
    threads = previous if setting == 0 and previous else choose_threads(setting)
    torch.set_num_threads(threads)
    return threads
