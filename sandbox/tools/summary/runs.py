"""Any set of run folders and sweeps as one summary: runs whose recipes differ only in the seed form a group."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from rich.console import Console

from sandbox.engine.rundir import RunDir, SweepDir
from sandbox.errors import SandboxError
from sandbox.tools.summary.cells import CellResult, read_cell
from sandbox.tools.summary.render import SweepSummary, report_summary
from sandbox.tools.summary.stats import aggregate, resolve_metrics, value_text
from sandbox.tools.summary.sweep import load_cells

#: recipe keys that do not tell runs apart: the seed (runs that differ only there form one group, averaged over
#: seeds) and the keys that do not change results
NOT_COMPARED = (
    "name",
    "plugins",
    "launcher",
    "run.seed",
    "run.output",
    "run.device",
    "run.workers",
    "run.threads",
    "run.loggers",
)


def _flat(data: Any, prefix: str = "") -> dict[str, str]:
    if not isinstance(data, dict):
        return {prefix[:-1]: value_text(data)}
    out: dict[str, str] = {}
    for key, value in data.items():
        out.update(_flat(value, f"{prefix}{key}."))
    return out


def _recipe_facts(folder: Path) -> Optional[tuple[dict[str, str], int]]:
    """The compared keys of a run folder's resolved recipe (dotted key -> value text) and its seed."""
    from omegaconf import OmegaConf

    path = RunDir(folder).recipe
    if not path.is_file():
        return None
    data = OmegaConf.to_container(OmegaConf.load(path))
    if not isinstance(data, dict):
        return None
    facts = {k: v for k, v in _flat(data).items() if not any(k == n or k.startswith(n + ".") for n in NOT_COMPARED)}
    return facts, int((data.get("run") or {}).get("seed") or 0)


def collect_runs(paths: list[str | Path]) -> list[tuple[CellResult, dict[str, str]]]:
    """Every run in ``paths`` (run folders, sweeps, or folders of runs such as ``runs/``) with its compared keys;
    a folder named twice counts once."""
    entries: list[tuple[CellResult, dict[str, str]]] = []
    seen: set[Path] = set()

    def add(folder: Path, cell: CellResult | None = None, fallback: dict[str, str] | None = None) -> None:
        if folder.resolve() in seen:
            return
        seen.add(folder.resolve())
        recipe = _recipe_facts(folder)
        facts, seed = recipe if recipe is not None else (fallback or {}, cell.seed if cell else 0)
        entries.append((cell or read_cell(folder, str(folder), (), seed), facts))

    for path in map(Path, paths):
        if SweepDir(path).is_sweep():
            plan, cells = load_cells(path)
            for cell, entry in zip(cells, plan["cells"]):
                cell.id = f"{path}/{cell.id}"
                add(SweepDir(path).cell(entry["id"]), cell, {str(k): value_text(v) for k, v in entry["group"].items()})
        elif RunDir(path).is_run():
            add(path)
        elif path.is_dir() and (runs := sorted(p for p in path.iterdir() if RunDir(p).is_run())):
            for run in runs:
                add(run)
        else:
            raise SandboxError(
                f"{path} is neither a run folder (with {RunDir.RECIPE}), a sweep (with {SweepDir.PLAN}) nor a "
                "folder of runs"
            )
    return entries


def summarize_runs(
    paths: list[str | Path],
    *,
    metrics: list[str] | None = None,
    baseline: str | None = None,
    console: Console | None = None,
    out: str | Path | None = None,
) -> SweepSummary:
    """``sandbox summary runs/a runs/b sweeps/x``: any set of runs as one table.

    Runs whose resolved recipes differ only in the seed (and in keys that do
    not change results, :data:`NOT_COMPARED`) form one group; the recipe keys
    that differ between groups are the table's columns, as a sweep's axes
    are. Ranked and compared with the baseline like a sweep; the files are
    written into ``out`` when given.
    """
    from sandbox.console import console as default_console

    entries = collect_runs(paths)
    keys: list[str] = []
    for _, facts in entries:
        keys += [k for k in facts if k not in keys]
    axes = [k for k in keys if len({facts.get(k, "-") for _, facts in entries}) > 1]
    cells = []
    for cell, facts in entries:
        cell.group = tuple(facts.get(k, "-") for k in axes)
        cells.append(cell)
    labels = {k: list(dict.fromkeys(cell.group[i] for cell in cells)) for i, k in enumerate(axes)}
    plan = {"axes": [{"key": k, "labels": labels[k], "values": labels[k]} for k in axes]}
    chosen = resolve_metrics(metrics, cells)
    summary = SweepSummary(
        sweep_dir=Path(out) if out is not None else Path("."),
        axes=axes,
        metrics=chosen,
        groups=aggregate(plan, cells, chosen, baseline),
        title=f"Summary of {len(cells)} runs in {', '.join(str(p) for p in paths)}",
    )
    return report_summary(summary, console or default_console, Path(out) if out is not None else None)
