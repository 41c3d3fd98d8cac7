"""One sweep folder's summary: its plan's cells, read from their folders, grouped across seeds."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rich.console import Console

from sandbox.engine.rundir import SweepDir, read_json
from sandbox.engine.sweepdir import sweep_status
from sandbox.errors import SandboxError
from sandbox.tools.summary.cells import CellResult, read_cell
from sandbox.tools.summary.render import SweepSummary, report_summary
from sandbox.tools.summary.stats import aggregate, resolve_metrics

#: where ``sandbox summary SWEEP --metric/--baseline`` writes, so the sweep's own summary files stay as written
SUMMARIES = "summaries"


def summary_folder(sweep_dir: str | Path, metrics: list[str] | None = None, baseline: str | None = None) -> Path:
    """The folder for a summary with other metrics or another baseline than the sweep's own:
    ``SWEEP/summaries/<metrics>[@<baseline>]/``, its name made of the options (``:`` and ``,`` become ``_``)."""
    name = "+".join(metrics or ["default"]) + (f"@{baseline}" if baseline else "")
    return Path(sweep_dir) / SUMMARIES / re.sub(r"[^\w.=+@-]+", "_", name)


def load_cells(sweep_dir: Path) -> tuple[dict[str, Any], list[CellResult]]:
    """The plan in ``sweep.json`` and each cell's outcome, read from its folder."""
    sweep = SweepDir(sweep_dir)
    plan_path = sweep.plan
    if not plan_path.exists():
        raise SandboxError(f"{sweep_dir} holds no {sweep.PLAN}; expected the folder of a sandbox sweep")
    plan = read_json(plan_path)
    if not isinstance(plan, dict):
        raise SandboxError(f"{plan_path} is unreadable; run the sweep command again to rewrite it")
    cells = []
    for entry in plan["cells"]:
        group = tuple(entry["group"].values())
        if entry["status"] == "invalid":
            cells.append(CellResult(entry["id"], group, entry["seed"], "invalid", entry.get("error")))
        else:
            cells.append(read_cell(sweep.cell(entry["id"]), entry["id"], group, entry["seed"]))
    if any(cell.status == "missing" for cell in cells):  # a live sweep: what each unfinished cell is doing
        try:
            states = {row.id: row for row in sweep_status(sweep_dir)}
        except SandboxError:
            states = {}
        for cell in cells:
            if cell.status == "missing" and (row := states.get(cell.id)) is not None and row.state != "done":
                cell.error = row.state + (f": {row.detail}" if row.detail else "")
    return plan, cells


def summarize(
    sweep_dir: str | Path,
    *,
    metrics: list[str] | None = None,
    baseline: str | None = None,
    console: Console | None = None,
    write: bool = True,
    out: str | Path | None = None,
) -> SweepSummary:
    """Aggregate a sweep folder, print the table and write summary.csv, summary.md and summary.png into
    ``out`` (default: the sweep folder; none with ``write=False``)."""
    from sandbox.console import console as default_console

    console = console or default_console
    sweep_dir = Path(sweep_dir)
    plan, cells = load_cells(sweep_dir)
    chosen = resolve_metrics(metrics, cells)
    groups = aggregate(plan, cells, chosen, baseline)
    summary = SweepSummary(sweep_dir=sweep_dir, axes=[a["key"] for a in plan["axes"]], metrics=chosen, groups=groups)
    folder = (Path(out) if out is not None else sweep_dir) if write else None
    return report_summary(summary, console, folder)
