"""``sandbox summary``: a sweep's cells grouped across seeds, ranked, and compared with a baseline.

Cells with the same axis values (all seeds) form a group. For each group and
metric the table gives the mean, the sample standard deviation across seeds
and the number of finished cells. Metrics are dotted keys of the cells'
``summary.json``; by default every numeric ``sample_quality.generated.*``
(the dataset's own score of the samples), then ``train.final_val_loss_ema``
and ``train.images_per_s``. Sample quality comes first, and so ranks,
because it is comparable across any axis; the validation loss is not
comparable across schedules, targets or weightings (each draws other noise
levels, or weighs them otherwise), only within one. Among the sample-quality
figures, FID then KID (``eval.metrics``, :mod:`sandbox.engine.fid`) come first where
the cells have them: the standard figures for images.
A metric whose name contains ``loss``, ``distance``, ``error``, ``swd``,
``w2``, ``fid`` or ``kid`` is better lower, any other better higher; ``key:min`` or
``key:max`` says so explicitly. Groups are ranked by the first metric, and
each is compared with the baseline group (the first in plan order, or the one
``--baseline key=value,...`` picks). Writes ``summary.csv``, ``summary.md``
and ``summary.png`` into the sweep folder.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from rich.console import Console
from rich.table import Table

from sandbox.engine.rundir import read_json
from sandbox.errors import RecipeError, SandboxError
from sandbox.tools.sweep.plan import SWEEP_FILE, parse_value, split_list

DEFAULT_METRICS = ("train.final_val_loss_ema", "train.images_per_s")
GENERATED = "sample_quality.generated."
LOWER_IS_BETTER = ("loss", "distance", "error", "swd", "w2", "fid", "kid")
FIRST = ("fid", "kid")  # sample-quality figures that rank before the dataset's own, where present
LIVE_STATES = ("running", "queued", "interrupted", "to run", "unknown")  # sandbox sweep --status's unfinished cells
CURVE = ("val_loss_ema", "val_loss")  # the metrics.jsonl key drawn as the validation curve (first present)


@dataclass(frozen=True)
class Metric:
    key: str  # dotted key in summary.json
    lower_is_better: bool

    @property
    def label(self) -> str:
        for prefix in ("train.", "sample_quality."):
            if self.key.startswith(prefix):
                return self.key[len(prefix) :]
        return self.key


def lower_is_better(key: str) -> bool:
    """True for losses and distances (a word of :data:`LOWER_IS_BETTER` in the name)."""
    words = re.split(r"[._\-]", key.lower())
    return any(word in LOWER_IS_BETTER for word in words) or "loss" in key.lower()


def parse_metric(text: str) -> Metric:
    """``key``, ``key:min`` (lower is better) or ``key:max``."""
    key, _, direction = text.partition(":")
    if direction not in ("", "min", "max") or not key:
        raise RecipeError(
            f"metric '{text}': expected key, key:min or key:max, for example "
            "sample_quality.generated.confident_share:max"
        )
    return Metric(key, lower_is_better(key) if not direction else direction == "min")


@dataclass
class CellResult:
    id: str
    group: tuple[str, ...]
    seed: int
    status: str  # done, diverged, failed, invalid or missing
    error: Optional[str] = None
    values: dict[str, float] = field(default_factory=dict)  # numeric summary.json entries, dotted keys
    curve: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class Group:
    # fmt: off
    labels: dict[str, str]         # axis key -> value label
    cells: list[CellResult]
    facts: dict[str, str]          # axis key (and keys inside section values) -> value, for --baseline
    stats: dict[str, tuple[Optional[float], Optional[float], int]] = field(default_factory=dict)  # mean, std, n
    diff: dict[str, Optional[float]] = field(default_factory=dict)
    rank: Optional[int] = None
    baseline: bool = False
    # fmt: on

    @property
    def name(self) -> str:
        return " / ".join(self.labels.values()) or "recipe"

    def count(self, status: str) -> int:
        return sum(c.status == status for c in self.cells)


@dataclass
class SweepSummary:
    sweep_dir: Path
    axes: list[str]
    metrics: list[Metric]
    groups: list[Group]
    files: dict[str, Path] = field(default_factory=dict)
    title: str = ""  # default: "Sweep summary: <sweep_dir>"

    @property
    def ranked(self) -> list[Group]:
        return sorted(self.groups, key=lambda g: (g.rank is None, g.rank or 0))


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


def load_cells(sweep_dir: Path) -> tuple[dict[str, Any], list[CellResult]]:
    """The plan in ``sweep.json`` and each cell's outcome, read from its folder."""
    plan_path = Path(sweep_dir) / SWEEP_FILE
    if not plan_path.exists():
        raise SandboxError(f"{sweep_dir} holds no {SWEEP_FILE}; expected the folder of a sandbox sweep")
    plan = read_json(plan_path)
    if not isinstance(plan, dict):
        raise SandboxError(f"{plan_path} is unreadable; run the sweep command again to rewrite it")
    cells = []
    for entry in plan["cells"]:
        group = tuple(entry["group"].values())
        if entry["status"] == "invalid":
            cells.append(CellResult(entry["id"], group, entry["seed"], "invalid", entry.get("error")))
        else:
            cells.append(read_cell(Path(sweep_dir) / "cells" / entry["id"], entry["id"], group, entry["seed"]))
    if any(cell.status == "missing" for cell in cells):  # a live sweep: what each unfinished cell is doing
        from sandbox.tools.sweep.plan import sweep_status

        try:
            states = {row.id: row for row in sweep_status(sweep_dir)}
        except SandboxError:
            states = {}
        for cell in cells:
            if cell.status == "missing" and (row := states.get(cell.id)) is not None and row.state != "done":
                cell.error = row.state + (f": {row.detail}" if row.detail else "")
    return plan, cells


def read_cell(folder: Path, id: str, group: tuple[str, ...], seed: int) -> CellResult:
    """The outcome of one run folder (a sweep's cell, or a run of its own)."""
    if (data := read_json(folder / "summary.json")) is not None:
        values, health = _numbers(data), data.get("sample_health") or {}
        status, error = "done", None
        if health.get("diverged"):  # its quality figures are not ranked beside healthy cells
            status = "diverged"
            error = (
                f"samples diverged: {health.get('finite_share', 0):.0%} finite, "
                f"{health.get('in_range_share', 0):.0%} within the data's range"
            )
        return CellResult(id, group, seed, status, error, values, _curve(folder / "metrics.jsonl"))
    if (folder / "error.json").exists():
        error = (read_json(folder / "error.json") or {}).get("message", "error.json is unreadable")
        return CellResult(id, group, seed, "failed", error)
    state = read_json(folder / "status.json") or {}
    if state.get("status") == "diverged":
        return CellResult(id, group, seed, "failed", state.get("message") or f"diverged at step {state.get('step')}")
    if state.get("status") == "interrupted":
        return CellResult(id, group, seed, "missing", f"interrupted at step {state.get('step')}; resume it")
    return CellResult(id, group, seed, "missing", "training" if state.get("status") == "training" else "not run yet")


def _norm(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _facts(axes: list[dict[str, Any]], labels: tuple[str, ...]) -> dict[str, str]:
    facts = {}
    for axis, label in zip(axes, labels):
        facts[axis["key"]] = label
        value = axis["values"][axis["labels"].index(label)]
        if isinstance(value, dict):
            for key, inner in _numbers_or_values(value).items():
                facts[f"{axis['key']}.{key}"] = _norm(inner)
        else:
            facts.setdefault(f"{axis['key']}#value", _norm(value))
    return facts


def _numbers_or_values(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_numbers_or_values(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _resolve_metrics(requested: list[str] | None, cells: list[CellResult]) -> list[Metric]:
    available: list[str] = []
    for cell in cells:
        available += [k for k in cell.values if k not in available]
    if not requested:
        generated = [k for k in available if k.startswith(GENERATED)]
        first = [GENERATED + name for name in FIRST if GENERATED + name in generated]
        generated = first + [k for k in generated if k not in first]
        keys = generated + [k for k in DEFAULT_METRICS if k in available or not available]
        return [Metric(k, lower_is_better(k)) for k in keys]
    metrics = []
    for text in requested:
        metric = parse_metric(text)
        if available and metric.key not in available:
            matches = [k for k in available if k.endswith("." + metric.key)]
            matches = [k for k in matches if k.startswith(GENERATED)] or matches
            if len(matches) != 1:
                raise RecipeError(
                    f"metric '{metric.key}': "
                    + (
                        f"matches {', '.join(matches)}; give the full key"
                        if matches
                        else f"not in the cells' summary.json; numeric keys: {', '.join(available)}"
                    )
                )
            metric = Metric(matches[0], metric.lower_is_better)
        metrics.append(metric)
    return metrics


def mean_std(values: list[Optional[float]]) -> tuple[Optional[float], Optional[float], int]:
    """Mean, sample standard deviation (n - 1; None below two values) and n."""
    kept = [v for v in values if v is not None and math.isfinite(v)]
    n = len(kept)
    if n == 0:
        return None, None, 0
    mean = sum(kept) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in kept) / (n - 1)) if n > 1 else None
    return mean, std, n


def parse_baseline(text: str) -> dict[str, str]:
    """``key=value,key=value`` -> {key: normalised value}."""
    pairs = {}
    try:
        items = split_list(text)
    except ValueError as exc:
        raise RecipeError(f"--baseline '{text}': {exc}") from exc
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(
                f"--baseline '{text}': expected key=value,..., for example "
                "--baseline denoiser.name=unet,schedule.name=linear"
            )
        try:
            pairs[key.strip()] = _norm(parse_value(value.strip()))
        except ValueError as exc:
            raise RecipeError(f"--baseline '{text}': {exc}") from exc
    return pairs


def _matches(group: Group, pairs: dict[str, str]) -> bool:
    for key, value in pairs.items():
        if group.facts.get(key) != value and group.facts.get(f"{key}#value") != value:
            return False
    return True


def aggregate(
    plan: dict[str, Any], cells: list[CellResult], metrics: list[Metric], baseline: str | None = None
) -> list[Group]:
    """Groups in plan order with their statistics, rank by the first metric and difference to the baseline."""
    axes = plan["axes"]
    groups: dict[tuple[str, ...], Group] = {}
    for cell in cells:
        if cell.group not in groups:
            groups[cell.group] = Group(
                labels=dict(zip((a["key"] for a in axes), cell.group)), cells=[], facts=_facts(axes, cell.group)
            )
        groups[cell.group].cells.append(cell)
    ordered = list(groups.values())
    for group in ordered:
        done = [c for c in group.cells if c.status == "done"]
        group.stats = {m.key: mean_std([c.values.get(m.key) for c in done]) for m in metrics}
    if not ordered:
        return ordered
    if baseline:
        pairs = parse_baseline(baseline)
        chosen = [g for g in ordered if _matches(g, pairs)]
        if len(chosen) != 1:
            names = ", ".join(" ".join(f"{k}={v}" for k, v in g.labels.items()) for g in (chosen or ordered))
            raise RecipeError(
                f"--baseline '{baseline}' matches {len(chosen)} groups; "
                f"{'these' if chosen else 'the groups are'}: {names}"
            )
        base = chosen[0]
    else:
        base = ordered[0]
    base.baseline = True
    for group in ordered:
        for m in metrics:
            mine, theirs = group.stats[m.key][0], base.stats[m.key][0]
            group.diff[m.key] = mine - theirs if mine is not None and theirs is not None else None
    if metrics:
        first = metrics[0]
        sign = 1.0 if first.lower_is_better else -1.0
        means = {id(g): g.stats[first.key][0] for g in ordered}
        scored = [g for g in ordered if means[id(g)] is not None]
        scored.sort(key=lambda g: sign * (means[id(g)] or 0.0))
        for rank, group in enumerate(scored, 1):
            group.rank = rank
    return ordered


def _fmt(value: Optional[float]) -> str:
    if value is None:
        return "-"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3e}"
    return f"{value:.4g}"


def _mean_std_text(stat: tuple[Optional[float], Optional[float], int]) -> str:
    mean, std, _ = stat
    return "-" if mean is None else _fmt(mean) if std is None else f"{_fmt(mean)} ± {_fmt_std(std)}"


def _fmt_std(std: float) -> str:
    """Two significant digits, in fixed point."""
    if std == 0 or not 1e-4 <= abs(std) < 1e6:
        return _fmt(std)
    return f"{std:.{max(0, 1 - math.floor(math.log10(abs(std))))}f}"


def _diff_text(group: Group, metric: Metric) -> str:
    if group.baseline:
        return "baseline"
    diff, base = group.diff.get(metric.key), group.stats[metric.key][0]
    if diff is None:
        return "-"
    reference = base - diff if base is not None else None
    percent = f" ({diff / reference * 100:+.1f}%)" if reference else ""
    return f"{'+' if diff >= 0 else ''}{_fmt(diff)}{percent}"


def _cells_text(group: Group) -> str:
    text = f"{group.count('done')}/{len(group.cells)}"
    notes = [f"{group.count(s)} {s}" for s in ("diverged", "failed", "invalid", "missing") if group.count(s)]
    states: dict[str, int] = {}  # what the missing ones are doing, where a live sweep says (running, queued...)
    for cell in group.cells:
        state = (cell.error or "").split(":")[0]
        if cell.status == "missing" and state in LIVE_STATES:
            states[state] = states.get(state, 0) + 1
    if states:
        notes[-1] += ": " + ", ".join(f"{n} {state}" for state, n in states.items())
    return text + (f" ({', '.join(notes)})" if notes else "")


def rows(summary: SweepSummary) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the table (ranked): rank, axis values, cells, mean ± std per metric, difference."""
    metrics = summary.metrics
    header = ["rank", *summary.axes, "cells"]
    header += [f"{m.label} {'↓' if m.lower_is_better else '↑'}" for m in metrics]
    if metrics:
        header.append(f"Δ {metrics[0].label}")
    out = []
    for group in summary.ranked:
        row = [str(group.rank or "-"), *group.labels.values(), _cells_text(group)]
        row += [_mean_std_text(group.stats[m.key]) for m in metrics]
        if metrics:
            row.append(_diff_text(group, metrics[0]))
        out.append(row)
    return header, out


def rich_table(summary: SweepSummary) -> Table:
    header, body = rows(summary)
    table = Table(
        title=summary.title or f"Sweep summary: {summary.sweep_dir}",
        title_justify="left",
        caption="mean ± std over seeds; ↓ lower is better, ↑ higher; Δ: difference to the baseline "
        "(bold), ranked by the first metric",
        caption_justify="left",
    )
    for column in header:
        table.add_column(column, overflow="fold")
    for group, row in zip(summary.ranked, body):
        table.add_row(*row, style="bold" if group.baseline else None)
    return table


def write_markdown(summary: SweepSummary, path: Path) -> None:
    header, body = rows(summary)
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
    lines += [
        "",
        "Mean ± standard deviation over seeds; ↓ lower is better, ↑ higher; Δ: difference to the "
        "baseline, ranked by the first metric.",
        "",
    ] + _failure_lines(summary)
    path.write_text("\n".join(lines).rstrip() + "\n")


def write_csv(summary: SweepSummary, path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        header = ["rank", *summary.axes, "baseline", "cells", "done", "failed", "invalid", "missing"]
        for m in summary.metrics:
            header += [f"{m.key}.mean", f"{m.key}.std", f"{m.key}.n", f"{m.key}.diff"]
        writer.writerow(header)
        for group in summary.ranked:
            row: list[Any] = [
                group.rank or "",
                *group.labels.values(),
                group.baseline,
                len(group.cells),
                *(group.count(s) for s in ("done", "failed", "invalid", "missing")),
            ]
            for m in summary.metrics:
                mean, std, n = group.stats[m.key]
                diff = group.diff.get(m.key)
                row += [
                    "" if mean is None else repr(mean),
                    "" if std is None else repr(std),
                    n,
                    "" if diff is None else repr(diff),
                ]
            writer.writerow(row)


def write_plot(summary: SweepSummary, path: Path) -> None:
    """Left: validation loss curves (mean over seeds per group); right: the first metric with std error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for group in summary.groups:
        by_step: dict[int, list[float]] = {}
        for cell in group.cells:
            for step, value in cell.curve:
                by_step.setdefault(step, []).append(value)
        if by_step:
            steps = sorted(by_step)
            left.plot(
                steps,
                [sum(by_step[s]) / len(by_step[s]) for s in steps],
                marker="o",
                markersize=3,
                label=group.name,
                linewidth=2.5 if group.baseline else 1.5,
            )
    left.set(xlabel="step", ylabel="validation loss (EMA weights)", title="validation loss, mean over seeds")
    left.set_yscale("log")
    if left.lines:
        left.legend(fontsize=8)
    if summary.metrics:
        metric = summary.metrics[0]
        groups = summary.groups
        means = [g.stats[metric.key][0] for g in groups]
        errors = [g.stats[metric.key][1] or 0.0 for g in groups]
        positions = range(len(groups))
        right.bar(
            positions,
            [m if m is not None else 0.0 for m in means],
            yerr=errors,
            capsize=4,
            color=["tab:orange" if g.baseline else "tab:blue" for g in groups],
        )
        for position, mean in zip(positions, means):
            if mean is None:
                right.annotate("no result", (position, 0), ha="center", va="bottom", rotation=90, fontsize=8)
        right.set_xticks(list(positions), [g.name for g in groups], rotation=20, ha="right", fontsize=8)
        direction = "lower" if metric.lower_is_better else "higher"
        right.set(ylabel=metric.label, title=f"{metric.label} ({direction} is better; orange: baseline)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _failure_lines(summary: SweepSummary) -> list[str]:
    """One line per failure message, naming the cells that share it."""
    by_message: dict[tuple[str, str], list[str]] = {}
    for group in summary.groups:
        for cell in group.cells:
            if cell.status in ("diverged", "failed", "invalid"):
                message = (cell.error or "").splitlines()[0] if cell.error else ""
                by_message.setdefault((cell.status, message), []).append(f"{cell.id} ({group.name}, seed {cell.seed})")
    return [
        f"- {status} {'cell' if len(ids) == 1 else f'{len(ids)} cells'} {', '.join(ids)}: {message}"
        for (status, message), ids in by_message.items()
    ]


def summarize(
    sweep_dir: str | Path,
    *,
    metrics: list[str] | None = None,
    baseline: str | None = None,
    console: Console | None = None,
    write: bool = True,
) -> SweepSummary:
    """Aggregate a sweep folder, print the table and write summary.csv, summary.md and summary.png."""
    from sandbox.console import console as default_console

    console = console or default_console
    sweep_dir = Path(sweep_dir)
    plan, cells = load_cells(sweep_dir)
    chosen = _resolve_metrics(metrics, cells)
    groups = aggregate(plan, cells, chosen, baseline)
    summary = SweepSummary(sweep_dir=sweep_dir, axes=[a["key"] for a in plan["axes"]], metrics=chosen, groups=groups)
    return _report(summary, console, sweep_dir if write else None)


def _report(summary: SweepSummary, console: Console, folder: Optional[Path]) -> SweepSummary:
    """Write summary.csv, summary.md and summary.png into ``folder`` (unless None) and print the table."""
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        summary.files = {"csv": folder / "summary.csv", "md": folder / "summary.md", "png": folder / "summary.png"}
        write_csv(summary, summary.files["csv"])
        write_markdown(summary, summary.files["md"])
        write_plot(summary, summary.files["png"])
    console.print(rich_table(summary))
    for line in _failure_lines(summary):
        console.print(f"[red]{line[2:]}[/]")
    if folder is not None:
        console.print(f"wrote {', '.join(str(p) for p in summary.files.values())}")
    return summary


# --- any set of run folders and sweeps -----------------------------------------------------------------------

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
        return {prefix[:-1]: _norm(data)}
    out: dict[str, str] = {}
    for key, value in data.items():
        out.update(_flat(value, f"{prefix}{key}."))
    return out


def _recipe_facts(folder: Path) -> Optional[tuple[dict[str, str], int]]:
    """The compared keys of a run folder's resolved recipe (dotted key -> value text) and its seed."""
    from omegaconf import OmegaConf

    path = folder / "recipe.yaml"
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
        if (path / SWEEP_FILE).is_file():
            plan, cells = load_cells(path)
            for cell, entry in zip(cells, plan["cells"]):
                cell.id = f"{path}/{cell.id}"
                add(path / "cells" / entry["id"], cell, {str(k): _norm(v) for k, v in entry["group"].items()})
        elif (path / "recipe.yaml").is_file():
            add(path)
        elif path.is_dir() and (runs := sorted(p for p in path.iterdir() if (p / "recipe.yaml").is_file())):
            for run in runs:
                add(run)
        else:
            raise SandboxError(
                f"{path} is neither a run folder (with recipe.yaml), a sweep (with {SWEEP_FILE}) nor a folder of runs"
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
    chosen = _resolve_metrics(metrics, cells)
    summary = SweepSummary(
        sweep_dir=Path(out) if out is not None else Path("."),
        axes=axes,
        metrics=chosen,
        groups=aggregate(plan, cells, chosen, baseline),
        title=f"Summary of {len(cells)} runs in {', '.join(str(p) for p in paths)}",
    )
    return _report(summary, console or default_console, Path(out) if out is not None else None)
