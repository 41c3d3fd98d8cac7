"""``sandbox sweep --status``: one row per cell, done, running, queued, failed, ... (read by
:func:`sandbox.engine.sweepdir.sweep_status`); ``sandbox run --status``: the same for one run folder."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from sandbox.engine.rundir import RunDir, read_json
from sandbox.engine.runlock import lock_holder
from sandbox.engine.sweepdir import STATES, CellStatus, _checkpointed, _step_of, job_states, read_jobs
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
    """A run folder's state as ``sandbox sweep --status`` gives a cell's, from its files and its newest job's
    state (``jobs.json``, written by ``sandbox run --launcher``): done, queued, running, failed, interrupted."""
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise SandboxError(f"{run.path}: no such run folder")
    recorded = read_jobs(run.path)
    if not run.recipe.is_file() and not recorded:
        raise SandboxError(f"{run.path} is not a run folder (it has no {RunDir.RECIPE} and no recorded job)")
    job, state = job_states(run.path, registry).get(run.path.name, (None, None)) if recorded else (None, None)
    row = CellStatus(run.path.name, {}, 0, "to run")
    if job is not None:
        row.job, row.log = str(job.get("job_id")), job.get("stderr")
    again = f"sandbox run --resume {run.path}" + (f" --launcher {job['launcher']}" if job is not None else "")
    status, step = _step_of(run)
    error = read_json(run.error) if run.error.exists() else None
    holder = lock_holder(run.path)
    if isinstance(read_json(run.summary), dict):
        row.state = "done"
    elif state is not None and state.phase in ("queued", "running"):
        row.state = "running" if state.phase == "running" and run.recipe.exists() else "queued"
        saved = _checkpointed(run)
        row.detail = state.raw if saved is None else f"{state.raw}, checkpoint at step {saved}"
    elif state is not None and state.phase == "unknown":
        row.state, row.detail = "unknown", f"job {row.job}: {state.raw}; not submitted again meanwhile"
    elif holder is not None:
        row.state, row.detail = "running", f"step {step} (PID {holder.get('pid')} on {holder.get('host')})"
    elif isinstance(error, dict):
        row.state, row.detail = "failed", str(error.get("message", f"{run.ERROR} is unreadable"))
    elif status in ("training", "interrupted"):
        how = f"checkpoint at step {_checkpointed(run)}" if _checkpointed(run) is not None else f"step {step}"
        row.state, row.detail = "interrupted", f"stopped at or after step {step} ({how}); resume it: {again}"
    elif state is not None:
        row.state = "failed"
        row.detail = f"job {row.job} ended ({state.raw}) without a result"
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
