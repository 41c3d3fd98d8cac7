"""What a run folder (a sweep's cell, or a run of its own) gives the summary: its outcome, its numbers, its curve."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from sandbox.engine.rundir import RunDir, read_json

CURVE = ("val_loss_ema", "val_loss")  # the metrics.jsonl key drawn as the validation curve (first present)


@dataclass
class CellResult:
    id: str
    group: tuple[str, ...]
    seed: int
    status: str  # done, diverged, failed, invalid or missing
    error: Optional[str] = None
    values: dict[str, float] = field(default_factory=dict)  # numeric summary.json entries, dotted keys
    curve: list[tuple[int, float]] = field(default_factory=list)


def _numbers(data: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(_numbers(value, f"{prefix}{key}."))
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        out[prefix[:-1]] = float(data)
    return out


def _curve(path: Path) -> list[tuple[int, float]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:  # a line torn by a crash
            continue
    for key in CURVE:
        points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
        if points:
            return points
    return []


def later_likelihoods(run: RunDir) -> dict[str, float]:
    """The records of every ``sandbox likelihood`` of a run, oldest first so each estimator's newest wins, as
    ``likelihood.<estimator>.*`` numbers: a likelihood computed after the run ranks beside its own."""
    files = sorted(run.likelihood.glob(f"*/{RunDir.LIKELIHOOD_FILE}"), key=lambda path: path.stat().st_mtime)
    out: dict[str, float] = {}
    for path in files:
        out.update(_numbers({"likelihood": (read_json(path) or {}).get("likelihood") or {}}))
    return out


def read_cell(folder: Path, id: str, group: tuple[str, ...], seed: int) -> CellResult:
    """The outcome of one run folder (a sweep's cell, or a run of its own); ``sandbox likelihood``'s later records
    join its ``summary.json`` (:func:`later_likelihoods`)."""
    run = RunDir(folder)
    if (data := read_json(run.summary)) is not None:
        values, health = {**_numbers(data), **later_likelihoods(run)}, data.get("sample_health") or {}
        status, error = "done", None
        if health.get("diverged"):  # its quality figures are not ranked beside healthy cells
            status = "diverged"
            error = (
                f"samples diverged: {health.get('finite_share', 0):.0%} finite, "
                f"{health.get('in_range_share', 0):.0%} within the data's range"
            )
        return CellResult(id, group, seed, status, error, values, _curve(run.metrics))
    if run.error.exists():
        error = (read_json(run.error) or {}).get("message", f"{run.ERROR} is unreadable")
        return CellResult(id, group, seed, "failed", error)
    state = read_json(run.status) or {}
    if state.get("status") == "diverged":
        return CellResult(id, group, seed, "failed", state.get("message") or f"diverged at step {state.get('step')}")
    if state.get("status") == "interrupted":
        return CellResult(id, group, seed, "missing", f"interrupted at step {state.get('step')}; resume it")
    return CellResult(id, group, seed, "missing", "training" if state.get("status") == "training" else "not run yet")
