"""Signals: SIGINT and SIGTERM stop a sweep and its cells, each cell after a checkpoint; a second SIGINT kills them."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

from sandbox.errors import Interrupted


@contextlib.contextmanager
def handling(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """``handler`` for SIGINT and SIGTERM inside the block (signals reach the main thread only)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def stop_cell(signum: int, frame: Any) -> None:
    """A signal in a cell outside training stops it at once (training itself finishes its step and checkpoints:
    :class:`sandbox.engine.stop.StopRequest` replaces this handler while it runs)."""
    raise Interrupted(f"{signal.Signals(signum).name} outside training", signum)


def _send(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def kill_cell(pid: int) -> None:
    """SIGKILL a cell process and its process group (its DataLoader workers)."""
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
    _send(pid, signal.SIGKILL)


class SweepStop:
    """SIGINT / SIGTERM to the sweep. The first: no new cell starts, and each running cell process gets the signal
    once it has its handlers (it finishes its step, checkpoints and stops). A second SIGINT kills them at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.killed = False
        self.cells: dict[int, bool] = {}  # pid of a running cell process -> ready for a signal

    def __call__(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            for pid, ready in list(self.cells.items()):
                if ready:
                    _send(pid, signum)
        elif signum == signal.SIGINT and not self.killed:
            self.killed = True
            for pid in list(self.cells):
                kill_cell(pid)

    def ready(self, pid: int) -> None:
        self.cells[pid] = True
        if self.killed:
            kill_cell(pid)
        elif self.signum is not None:
            _send(pid, self.signum)


def stop_with_parent() -> None:
    """SIGTERM this cell process once when the sweep dies, even by SIGKILL, so it checkpoints and stops. (Linux's
    ``PR_SET_PDEATHSIG`` would fire again each time a dying multi-threaded sweep hands the child to another of its
    threads, and a later SIGTERM would cut the checkpointed stop short.)"""
    import multiprocessing
    import threading

    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()  # its sentinel reads as ready when the sweep ends
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="sandbox-sweep-watch", daemon=True).start()
