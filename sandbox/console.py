"""One console and one progress factory for everything the sandbox prints (rich).

On a terminal, long work shows rich's live bars. Where the output is not a terminal (a file, a pipe, a SLURM
log), rich draws no live bar, so :class:`PlainProgress` prints the same figures as a plain line every
``SANDBOX_PROGRESS_SECONDS`` (30 s by default) and once at the end, and the consoles are wide enough that a
table keeps every cell whole instead of folding at 80 columns.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Optional

from rich.console import Console, ConsoleDimensions
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from sandbox.errors import SandboxError

PROGRESS_SECONDS = "SANDBOX_PROGRESS_SECONDS"  # the environment variable: seconds between plain progress lines
DEFAULT_PROGRESS_SECONDS = 30.0
PLAIN_WIDTH = 10_000  # the width of a console that is not a terminal: wider than any table's natural width


class _Console(Console):
    """rich's Console, as wide as any line when its output is not a terminal: there a table keeps its natural
    width instead of folding numbers at 80 columns. ``COLUMNS``, or a width given, still sets the width."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self._width is None and "COLUMNS" not in self._environ and not self.is_terminal:
            return ConsoleDimensions(PLAIN_WIDTH, size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


console = _Console(highlight=False)
error_console = _Console(stderr=True, highlight=False)


def progress_seconds() -> float:
    """The seconds between plain progress lines: ``SANDBOX_PROGRESS_SECONDS``, else 30; 0 prints at every step."""
    text = os.environ.get(PROGRESS_SECONDS, "").strip()
    if not text:
        return DEFAULT_PROGRESS_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise SandboxError(f"{PROGRESS_SECONDS}={text!r}: expected a number of seconds, 0 or more")
    return seconds


def clock(seconds: float) -> str:
    """``h:mm:ss``, hours unbounded (``80:00:00`` for a three-day run)."""
    minutes, secs = divmod(int(max(seconds, 0.0)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


@dataclass
class _Task:
    description: str
    total: Optional[float]
    fields: dict[str, Any]
    started: float
    completed: float = 0.0
    printed: float = 0.0  # when its last line was printed (its start before the first)
    base: tuple[float, float] = (0.0, 0.0)  # (time, completed) the rate counts from
    advanced: bool = False  # moved by advance since it was added (a set count before that is a resume)
    moved: bool = False  # changed since its last line
    done: bool = False


@dataclass
class PlainProgress:
    """rich's :class:`~rich.progress.Progress` interface (a context manager with ``add_task``, ``advance``,
    ``update``) for a console that is not a terminal: each task prints a plain line every ``every`` seconds of
    wall time (from its own updates, or from a timer thread while it stalls) and a last one at the end::

        train step 1,200/600,000 (0.2%)  loss 0.0412  834 img/s  elapsed 0:01:30  left 3:20:11

    ``unit`` names what is counted (``step``); ``columns`` are the task fields shown after the count, as
    ``str.format`` templates (``"loss {loss}"``). ``every=0`` prints a line at each change of a count.
    """

    console: Console
    unit: str = ""
    columns: tuple[str, ...] = ()
    every: float = field(default_factory=progress_seconds)
    tasks: dict[TaskID, _Task] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._ticker: Optional[threading.Thread] = None

    def __enter__(self) -> PlainProgress:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        if self.every > 0 and self._ticker is None:
            self._stop.clear()
            self._ticker = threading.Thread(target=self._tick, name="sandbox-progress", daemon=True)
            self._ticker.start()

    def stop(self) -> None:
        """Stop the timer and print the last line of each task that moved since its last one."""
        if self._ticker is not None:
            self._stop.set()
            self._ticker.join()
            self._ticker = None
        with self._lock:
            for task in self.tasks.values():
                if task.moved and not task.done:
                    self._print(task)
                task.done = True

    def add_task(
        self, description: str, total: Optional[float] = 100.0, completed: float = 0, **fields: Any
    ) -> TaskID:
        now = time.monotonic()
        with self._lock:
            task_id = TaskID(len(self.tasks))
            self.tasks[task_id] = _Task(description, total, fields, now, completed, now, (now, completed))
        return task_id

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(
        self,
        task_id: TaskID,
        *,
        total: Optional[float] = None,
        completed: Optional[float] = None,
        advance: Optional[float] = None,
        description: Optional[str] = None,
        **fields: Any,
    ) -> None:
        fields.pop("visible", None)
        fields.pop("refresh", None)
        now = time.monotonic()
        with self._lock:
            task = self.tasks[task_id]
            if total is not None:
                task.total = total
            if description is not None:
                task.description = description
            task.fields.update(fields)
            counted = completed is not None or advance is not None
            if completed is not None:
                task.completed = completed
                if not task.advanced:  # a count set before any advance (a resumed run) is not speed
                    task.base = (now, completed)
            if advance is not None:
                task.completed += advance
                task.advanced = True
            task.moved = task.moved or counted or total is not None
            if counted and not task.done and now - task.printed >= self.every:
                self._print(task, now)

    def line(self, task: _Task, now: Optional[float] = None) -> str:
        """The task's line: what, the count (of the total, with its share), the fields, elapsed, time left."""
        now = time.monotonic() if now is None else now
        count = int(task.completed + 1e-6)
        parts = [task.description + (f" {self.unit}" if self.unit else "")]
        if task.total:
            parts[0] += f" {count:,}/{int(task.total):,} ({100 * min(task.completed / task.total, 1):.1f}%)"
        elif task.completed:
            parts[0] += f" {count:,}"
        for template in self.columns:
            with suppress(KeyError, IndexError, ValueError):
                parts.append(template.format(**task.fields))
        parts.append(f"elapsed {clock(now - task.started)}")
        since, base = task.base
        rate = (task.completed - base) / (now - since) if now > since else 0.0
        if task.total and task.completed < task.total and rate > 0:
            parts.append(f"left {clock((task.total - task.completed) / rate)}")
        return "  ".join(parts)

    def _print(self, task: _Task, now: Optional[float] = None) -> None:
        now = time.monotonic() if now is None else now
        self.console.print(self.line(task, now), markup=False, highlight=False, soft_wrap=True)
        task.printed, task.moved = now, False

    def _tick(self) -> None:
        """While the work stalls (a slow first step, a validation, a long doctor row), print a line on time."""
        while True:
            with self._lock:
                due = min((t.printed + self.every for t in self.tasks.values() if not t.done), default=None)
            wait = self.every if due is None else max(due - time.monotonic(), 0.01)
            if self._stop.wait(wait):
                return
            now = time.monotonic()
            with self._lock:
                for task in self.tasks.values():
                    if not task.done and now - task.printed >= self.every:
                        self._print(task, now)


def counter(target: Console | None = None, *, transient: bool = False) -> Progress | PlainProgress:
    """A bar for counted work (samples drawn, doctor cells): what, bar, n / total, elapsed and remaining time;
    plain lines (:class:`PlainProgress`) where the console is not a terminal."""
    target = target or console
    if not target.is_terminal:
        return PlainProgress(target)
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=target,
        transient=transient,
    )


def progress(target: Console | None = None) -> Progress | PlainProgress:
    """A training bar: step, loss, images/s, elapsed and remaining time; plain lines where not a terminal."""
    target = target or console
    if not target.is_terminal:
        return PlainProgress(target, unit="step", columns=("loss {loss}", "{speed} img/s"))
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[speed]} img/s"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=target,
        transient=False,
    )


@contextmanager
def status(text: str, target: Console | None = None) -> Iterator[None]:
    """rich's spinner on a terminal; elsewhere ``text`` printed at once, then with the time elapsed on time."""
    target = target or console
    if target.is_terminal:
        with target.status(text):
            yield
        return
    target.print(text, markup=False, highlight=False, soft_wrap=True)
    with PlainProgress(target) as plain:
        plain.add_task(text, total=None)
        yield


def fmt(value: Any) -> str:
    """Compact number formatting for tables."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.3e}"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return str(value)


def table(title: str, columns: Iterable[str], rows: Iterable[Iterable[Any]]) -> Table:
    out = Table(title=title, title_justify="left", show_lines=False)
    for column in columns:
        out.add_column(column, overflow="fold")
    for row in rows:
        out.add_row(*(fmt(v) if not isinstance(v, str) else v for v in row))
    return out
