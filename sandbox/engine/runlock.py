"""Who owns a run folder: one process at a time trains or resumes it.

:class:`RunLock` holds an exclusive flock on the folder's ``.lock``
(:attr:`sandbox.engine.rundir.RunDir.lock`) with the holder's PID and host in
it, so a second ``sandbox run --resume`` is refused naming them, and
:func:`lock_holder` tells a reader whether a run that says "training" is alive.
The record a lock file keeps of its holder is written and read here only
(:func:`write_holder`, :func:`read_holder`, :func:`holder_alive`); the sweep's
lock keeps the same record.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from sandbox.engine.rundir import RunDir
from sandbox.errors import SandboxError


class RunInUse(SandboxError):
    """Another process holds the run folder's lock: it is training the run, or resuming it."""

    exit_code = 2


def host() -> str:
    """This machine's name, as a lock records its holder's."""
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether the process ``pid`` exists on this host (another user's counts too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_holder(fd: int) -> None:
    """Record this process as the holder of the lock file open at ``fd``: ``{"pid", "host"}``, replacing what
    was there."""
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": host()}).encode() + b"\n")


def read_holder(fd: int) -> dict[str, Any] | None:
    """The holder the lock file open at ``fd`` records (:func:`write_holder`), ``{"pid", "host"}``, or None when it
    records none; a bare PID (a sweep lock written before the host was recorded) reads as ``{"pid", "host": None}``.
    """
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        data = json.loads(os.read(fd, 4096).decode())
    except ValueError:
        return None
    if isinstance(data, int) and not isinstance(data, bool):
        return {"pid": data, "host": None}
    return data if isinstance(data, dict) else None


def holder_alive(holder: dict[str, Any]) -> bool:
    """Whether a lock's recorded holder (:func:`read_holder`) still runs: its PID is looked up here when it held
    the lock on this host (or did not say where); one on another host cannot be looked up and counts as alive."""
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return True
    return holder.get("host") not in (None, host()) or pid_alive(pid)


class RunLock:
    """An exclusive ``fcntl.flock`` on a run folder's ``.lock``, which records the holder's PID and host.

    The process that trains a run holds it for the run's whole life (new runs and ``--resume`` alike; under
    torchrun, rank 0), so a second ``--resume`` of the folder, or one started while the run still trains, stops
    with :class:`RunInUse` naming the holder. The OS releases it when the holder ends, however it ends, so a
    ``status.json`` that says ``training`` while the lock is free (:func:`lock_holder`) is a run that died. The
    sweep's lock (:class:`sandbox.tools.sweep.lock.SweepLock`) is the same idea for a sweep folder.
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = RunDir(self.run_dir).lock
        self.fd: int | None = None

    def __enter__(self) -> RunLock:

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SandboxError(f"could not open the lock {self.path}: {exc.strerror or exc}") from exc
        for attempt in range(5):  # a reader's look (:func:`lock_holder`) holds it for microseconds
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(0.02 * (attempt + 1))
        else:
            holder = read_holder(fd) or {}
            os.close(fd)
            who = f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')}"
            raise RunInUse(
                f"run folder {self.run_dir} is in use by {who}, which is training or resuming it; wait for it to "
                f"end (or stop it: kill {holder.get('pid', 'PID')} on {holder.get('host', 'its host')}), then "
                "run this command again"
            ) from None
        try:
            write_holder(fd)
        except OSError as exc:
            os.close(fd)
            raise SandboxError(f"could not write the lock {self.path}: {exc.strerror or exc}") from exc
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def lock_holder(run_dir: str | Path) -> dict[str, Any] | None:
    """``{"pid", "host"}`` of the process holding the run folder's lock, or None when it is free.

    Only looks: a shared flock taken and dropped at once, never the file created.
    """

    try:
        fd = os.open(RunDir(run_dir).lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return read_holder(fd) or {"pid": None, "host": None}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
