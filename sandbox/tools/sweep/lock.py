"""One sweep per folder: an exclusive lock that the sweep's cell processes inherit."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sandbox.engine.rundir import SweepDir
from sandbox.engine.runlock import holder_alive, host, read_holder, write_holder
from sandbox.errors import SandboxError


class SweepLock:
    """An exclusive ``fcntl.flock`` on ``<sweep>/.lock``, which records the sweep's PID and host as a run's lock
    does (:func:`sandbox.engine.runlock.write_holder`).

    The OS releases it when the last process holding it ends, so a crashed
    sweep never leaves it stuck. The sweep's cell processes inherit it
    (:meth:`handle`): a rerun cannot start while cells of a killed sweep are
    still writing their checkpoints.
    """

    def __init__(self, sweep_dir: str | Path):
        self.sweep_dir = Path(sweep_dir)
        self.path = SweepDir(self.sweep_dir).lock
        self.fd: int | None = None

    def __enter__(self) -> SweepLock:
        import fcntl

        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_holder(fd) or {}
            os.close(fd)
            pid, where = holder.get("pid"), holder.get("host")
            on = f" on host {where}" if where not in (None, host()) else ""
            if not isinstance(pid, int):
                who = "another sandbox sweep"
            elif holder_alive(holder):
                who = f"another sandbox sweep, PID {pid}{on} (stop it with kill {pid}{on})"
            else:
                who = f"the cell processes of sandbox sweep PID {pid}, which ended; they stop within a step"
            raise SandboxError(
                f"sweep folder {self.sweep_dir} is in use by {who}; run this command again when it is free"
            ) from None
        write_holder(fd)
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def handle(self) -> Inherited:
        """The lock's file descriptor, to pass to a spawned process that should hold the lock until it ends."""
        assert self.fd is not None, "the lock is not held"
        return Inherited(self.fd)


class Inherited:
    """A file descriptor handed to a spawned process the way multiprocessing hands over a ``Connection``
    (``reduction.DupFd``): the child shares the open file, and with it the sweep's flock, until it ends."""

    def __init__(self, fd: int):
        self.fd = fd

    def __reduce__(self) -> tuple[Any, ...]:
        from multiprocessing import reduction

        return rebuild_inherited, (reduction.DupFd(self.fd),)


def rebuild_inherited(dup: Any) -> Inherited:
    return Inherited(dup.detach())
