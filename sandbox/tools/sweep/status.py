"""``sandbox sweep --status``: one row per cell, done, running, queued, failed, ... (read by
:func:`sandbox.engine.sweepdir.sweep_status`)."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from sandbox.engine.sweepdir import STATES, CellStatus


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
    style = {"done": "green", "failed": "red", "invalid": "red", "running": "cyan", "interrupted": "yellow"}
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
