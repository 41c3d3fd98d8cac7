"""Run folders and the files in them: one type that names them, a new folder per run, atomic writes.

:class:`RunDir` names every file and folder of a run (the data that passes
between commands), and :class:`SweepDir` those of a sweep; every writer and
reader goes through them rather than spelling ``"summary.json"``.

A file is written to a temporary name in its own folder, flushed to disk,
then renamed over its final name (the rename is atomic on POSIX file
systems), so a crash or a full disk leaves either the old file or the new
one, never a truncated one. A write that fails (no space, no permission)
stops with :class:`sandbox.errors.SandboxError` naming the path and leaves
no partial file behind.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sandbox.errors import RecipeError, SandboxError


@dataclass(frozen=True)
class RunDir:
    """A run's folder and the name of everything in it; ``RunDir(path).summary`` is ``path/summary.json``.

    The layout, as README's "What a run produces" describes it::

        recipe.yaml            the resolved recipe
        status.json            training, interrupted, diverged or finished, with the step
        summary.json           the results; written only by a run that finished
        metrics.jsonl          one line per logged step
        ema.safetensors        the EMA weights, for other tools
        checkpoints/           final.pt, step_NNNNNN.pt, and latest (the newest's name)
        samples/               step_NNNNNN.png, final.png, final.pt (and png/, one file per sample)
        grids/                 <name>.json, time grids tuned by sandbox tune-steps
        likelihood/            <estimators>-<stamp>/likelihood.json, one folder per sandbox likelihood
        error.json             a sweep's cell that failed: the message, the exception's type, the traceback
        console.txt            a sweep's cell: what it printed, each session appended
        jobs.json, jobs/       a run sent to a cluster (sandbox run --launcher): its submissions and job logs,
                               named as a sweep's (:class:`SweepDir`)
        .lock                  held by the process training the run (:class:`RunLock`)
    """

    path: Path

    # fmt: off
    RECIPE = "recipe.yaml"
    STATUS = "status.json"
    SUMMARY = "summary.json"
    METRICS = "metrics.jsonl"
    EMA = "ema.safetensors"
    CHECKPOINTS = "checkpoints"
    SAMPLES = "samples"
    GRIDS = "grids"
    LIKELIHOOD = "likelihood"          # sandbox likelihood: one folder per call, its likelihood.json
    LIKELIHOOD_FILE = "likelihood.json"
    FINAL_CHECKPOINT = "final.pt"
    STEP_CHECKPOINT = "step_{:06d}.pt"
    LATEST = "latest"                  # names the newest good checkpoint
    ERROR = "error.json"               # why a sweep's cell failed
    CONSOLE = "console.txt"            # a sweep's cell's console output
    LOCK = ".lock"                     # flock'ed by the process that trains the run: its PID and host
    # fmt: on

    def __init__(self, path: str | Path):
        object.__setattr__(self, "path", Path(path))

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def recipe(self) -> Path:
        return self.path / self.RECIPE

    @property
    def status(self) -> Path:
        return self.path / self.STATUS

    @property
    def summary(self) -> Path:
        return self.path / self.SUMMARY

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def ema(self) -> Path:
        return self.path / self.EMA

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def final_checkpoint(self) -> Path:
        return self.checkpoints / self.FINAL_CHECKPOINT

    def step_checkpoint(self, step: int) -> Path:
        return self.checkpoints / self.STEP_CHECKPOINT.format(step)

    @property
    def samples(self) -> Path:
        return self.path / self.SAMPLES

    def step_picture(self, step: int) -> Path:
        return self.samples / f"step_{step:06d}.png"

    @property
    def final_picture(self) -> Path:
        return self.samples / "final.png"

    @property
    def final_samples(self) -> Path:
        """The final samples as one tensor (``torch.save``)."""
        return self.samples / "final.pt"

    @property
    def final_labels(self) -> Path:
        """The class each final sample was drawn for, ``int64 [N]`` (a conditional run)."""
        return self.samples / "final_labels.pt"

    @property
    def sample_pngs(self) -> Path:
        """One PNG per sample (``sandbox sample --png``)."""
        return self.samples / "png"

    @property
    def grids(self) -> Path:
        return self.path / self.GRIDS

    def grid(self, name: str) -> Path:
        """A tuned time grid saved by ``sandbox tune-steps``."""
        return self.grids / f"{name}.json"

    @property
    def likelihood(self) -> Path:
        """The parent of ``sandbox likelihood``'s folders."""
        return self.path / self.LIKELIHOOD

    @property
    def error(self) -> Path:
        """Why a sweep's cell failed: ``{message, type, traceback}``, written instead of raising."""
        return self.path / self.ERROR

    @property
    def console(self) -> Path:
        """What a sweep's cell printed; a resumed cell appends to its earlier sessions'."""
        return self.path / self.CONSOLE

    @property
    def lock(self) -> Path:
        """Flock'ed by the process that trains the run, for its whole life (:class:`RunLock`)."""
        return self.path / self.LOCK

    def is_run(self) -> bool:
        """Whether the folder holds a run (its resolved recipe)."""
        return self.recipe.is_file()


@dataclass(frozen=True)
class SampleDir:
    """What ``sandbox sample`` writes: a new folder under the run's ``samples/`` per call."""

    path: Path

    # fmt: off
    SAMPLES = "samples.pt"             # the samples as one tensor
    LABELS = "labels.pt"               # the class each sample was drawn for (a conditional run)
    PICTURE = "grid.png"               # the dataset's picture of them
    PNGS = "png"                       # one PNG per sample (--png)
    SUMMARY = "summary.json"           # written last: a folder without it is not a finished sampling
    # fmt: on

    def __init__(self, path: str | Path):
        object.__setattr__(self, "path", Path(path))

    @property
    def samples(self) -> Path:
        return self.path / self.SAMPLES

    @property
    def labels(self) -> Path:
        return self.path / self.LABELS

    @property
    def picture(self) -> Path:
        return self.path / self.PICTURE

    @property
    def pngs(self) -> Path:
        return self.path / self.PNGS

    @property
    def summary(self) -> Path:
        return self.path / self.SUMMARY


@dataclass(frozen=True)
class SweepDir:
    """A sweep's folder: its plan, its launcher submissions, its lock, and one run folder per cell."""

    path: Path

    # fmt: off
    PLAN = "sweep.json"                # the cells, their overrides and states
    JOBS = "jobs.json"                 # what a launcher submitted (sandbox sweep --launcher)
    LOCK = ".lock"                     # flock'ed by the sweep and its cell processes
    CELLS = "cells"                    # one run folder per cell, named by the cell's id
    LAUNCHER_FILES = "jobs"            # a launcher's scheduler files and job logs
    # fmt: on

    def __init__(self, path: str | Path):
        object.__setattr__(self, "path", Path(path))

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def plan(self) -> Path:
        return self.path / self.PLAN

    @property
    def jobs(self) -> Path:
        return self.path / self.JOBS

    @property
    def lock(self) -> Path:
        return self.path / self.LOCK

    @property
    def cells(self) -> Path:
        return self.path / self.CELLS

    def cell(self, cell_id: str) -> Path:
        """The run folder of the cell ``cell_id``."""
        return self.cells / cell_id

    @property
    def launcher_files(self) -> Path:
        """Where a launcher keeps its scheduler files and its jobs' logs."""
        return self.path / self.LAUNCHER_FILES

    def is_sweep(self) -> bool:
        return self.plan.is_file()


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=,-]*$")
NAME_MAX = 200  # a run folder's name adds a date stamp; file systems allow 255 bytes


def check_output(parent: str | Path, name: str) -> None:
    """``run.output`` must be a writable folder (or creatable) and the run name a plain file name."""
    if not _NAME.match(name) or name in (".", ".."):
        raise RecipeError(
            f"recipe key 'name': {name!r}; expected a plain folder name (letters, digits and . _ + = , -, "
            "no path separators)"
        )
    if len(name.encode()) > NAME_MAX:
        raise RecipeError(
            f"recipe key 'name': {name[:40]!r}... is {len(name.encode())} characters long, too long for a folder "
            f"name; expected at most {NAME_MAX}"
        )
    parent = Path(parent)
    existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise RecipeError(f"recipe key 'run.output': {str(parent)!r}; {existing} is a file, expected a folder")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise RecipeError(f"recipe key 'run.output': {str(parent)!r}; {existing} is not writable")


def new_run_dir(parent: str | Path, name: str) -> Path:
    """Create ``parent/name-YYYYmmdd-HHMMSS`` (with ``-2``, ``-3``... on a clash) and return it."""
    check_output(parent, name)
    parent = Path(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SandboxError(f"could not create the run folder's parent {parent}: {exc.strerror or exc}") from exc
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = f"{name}-{stamp}"
    for attempt in range(1, 10_000):
        path = parent / (base if attempt == 1 else f"{base}-{attempt}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise SandboxError(f"could not create a new run folder under {parent}")


_PARTIAL = re.compile(r"^\..+\.(\d+)\.tmp$")


def partial_write_owner(path: Path) -> int | None:
    """The PID in the name of :func:`atomic_write`'s temporary file ``.{name}.{pid}.tmp``; None for another name."""
    match = _PARTIAL.match(path.name)
    return int(match.group(1)) if match else None


# --- atomic writes -----------------------------------------------------------------------------------------------


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` through ``write(handle)`` into a temporary file, fsync it, then rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SandboxError(f"could not write {path}: {exc.strerror or exc}; nothing was left half-written") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable (best effort: some file systems cannot open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode()))


def json_safe(value: Any) -> Any:
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(path: str | Path, data: Any) -> None:
    """``data`` as indented JSON (non-finite numbers as null), written atomically."""
    write_text(path, json.dumps(json_safe(data), indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any | None:
    """The JSON in ``path``, or None (with a warning) when it is missing, truncated or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        warnings.warn(f"{path} is unreadable ({type(exc).__name__}: {exc}); treating it as missing", stacklevel=2)
        return None


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl``; a resumed run first drops the lines after its step."""

    def __init__(self, path: Path):
        self.path = path
        self.records: list[dict[str, Any]] = []

    def truncate_after(self, step: int) -> None:
        """Keep the lines up to ``step`` (a torn last line is dropped too), rewritten atomically."""
        kept: list[dict[str, Any]] = []
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and record.get("step", 0) <= step:
                    kept.append(record)
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self.records = kept

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        try:
            with self.path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
                handle.flush()
        except OSError as exc:
            raise SandboxError(f"could not write {self.path}: {exc.strerror or exc}") from exc
