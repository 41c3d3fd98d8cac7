"""``sandbox sweep --status``: one row per cell, done, running, queued, failed, ... (read by
:func:`sandbox.engine.sweepdir.sweep_status`); ``sandbox run --status``: the same for one run folder (both states
from :func:`sandbox.engine.sweepdir.folder_state`)."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from sandbox.engine.rundir import RunDir
from sandbox.engine.sweepdir import STATES, CellStatus, folder_state, job_states, read_jobs
from sandbox.errors import SandboxError
from sandbox.registry import Registry

STYLE = {"done": "green", "failed": "red", "invalid": "red", "running": "cyan", "interrupted": "yellow"}


def status_table(sweep_dir: Path, rows: list[CellStatus]) -> Table:
    """``sandbox sweep --status``: one row per cell, with counts in the title."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    title = ", ".join(f"{counts[s]} {s}" for s in STATES if s in counts)
    table = Table(title=f"Sweep {sweep_dir}: {title}", title_justify="left")
    axes = list(rows[0].group) if rows else []
    for column in ["cell", *axes, "seed", "state", "job", "detail", "log"]:
        table.add_column(column, overflow="fold")
    style = STYLE
    for row in rows:
        show_log = row.state in ("failed", "unknown", "interrupted")
        table.add_row(
            row.id,
            *(row.group.get(a, "") for a in axes),
            str(row.seed),
            f"[{style.get(row.state, 'default')}]{row.state}[/]",
            row.job or "",
            escape(row.detail),
            escape(row.log or "") if show_log else "",
        )
    return table


def run_status(run_dir: str | Path, registry: Registry | None = None) -> CellStatus:
    """A run folder's state as ``sandbox sweep --status`` gives a cell's
    (:func:`sandbox.engine.sweepdir.folder_state`), from its files and its newest job's state (``jobs.json``,
    written by ``sandbox run --launcher``): done, queued, running, failed, interrupted."""
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise SandboxError(f"{run.path}: no such run folder")
    recorded = read_jobs(run.path)
    if not run.recipe.is_file() and not recorded:
        raise SandboxError(f"{run.path} is not a run folder (it has no {RunDir.RECIPE} and no recorded job)")
    job = job_states(run.path, registry).get(run.path.name) if recorded else None
    row = CellStatus(run.path.name, {}, 0, "to run")
    if job is not None:
        row.job, row.log = str(job[0].get("job_id")), job[0].get("stderr")
    again = f"sandbox run --resume {run.path}" + (f" --launcher {job[0]['launcher']}" if job is not None else "")
    row.state, row.detail = folder_state(run.path, job, resume=f"resume it: {again}")
    return row


def run_table(run_dir: str | Path, row: CellStatus) -> Table:
    """``sandbox run --status``: the run's state, its job, what it is doing or what went wrong, and its job's log."""
    table = Table(title=f"Run {run_dir}: {row.state}", title_justify="left")
    for column in ("run", "state", "job", "detail", "log"):
        table.add_column(column, overflow="fold")
    show_log = row.state in ("failed", "unknown", "interrupted", "running", "queued")
    table.add_row(
        row.id,
        f"[{STYLE.get(row.state, 'default')}]{row.state}[/]",
        row.job or "",
        escape(row.detail),
        escape(row.log or "") if show_log else "",
    )
    return table
