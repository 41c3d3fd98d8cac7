"""A summary's outputs: the rich table, ``summary.md``, ``summary.csv`` and ``summary.png``, and a guidance
sweep's ``tradeoff.png`` (:mod:`~sandbox.tools.summary.tradeoff`)."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from rich.console import Console
from rich.table import Table

from sandbox.engine.sweepdir import UNFINISHED
from sandbox.tools.summary.stats import Group, Metric
from sandbox.tools.summary.tradeoff import Stat, Tradeoff, tradeoff

FILES = {"csv": "summary.csv", "md": "summary.md", "png": "summary.png"}  # what report_summary writes into its folder
TRADEOFF = "tradeoff.png"  # written beside them for a guidance sweep with a diversity figure


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

    @property
    def tradeoff(self) -> Optional[Tradeoff]:
        """Quality against diversity per guidance setting, where the groups differ in guidance."""
        return tradeoff(self.axes, self.metrics, self.groups)


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
        if cell.status == "missing" and state in UNFINISHED:
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
    if (trade := summary.tradeoff) is not None:
        lines += ["", *tradeoff_markdown(trade, summary.axes)]
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


def _mean_se_text(stat: Stat) -> str:
    mean, se, _ = stat
    return "-" if mean is None else _fmt(mean) if se is None else f"{_fmt(mean)} ± {_fmt_std(se)}"


def tradeoff_rows(trade: Tradeoff, axes: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: the guidance axes, the other axes, quality, diversity, seeds (finished cells)."""
    others = [key for key in axes if key not in trade.axes]
    header = [*trade.axes, *others]
    header += [f"{m.label} {'↓' if m.lower_is_better else '↑'}" for m in (trade.quality, trade.diversity)]
    header.append("seeds")
    body = [
        [
            *(p.labels[k] for k in trade.axes),
            *(p.labels[k] for k in others),
            _mean_se_text(p.quality),
            _mean_se_text(p.diversity),
        ]
        + [str(p.quality[2])]
        for p in trade.points
    ]
    return header, body


def tradeoff_markdown(trade: Tradeoff, axes: list[str]) -> list[str]:
    header, body = tradeoff_rows(trade, axes)
    return [
        "## guidance trade-off",
        "",
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
        *("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body),
        "",
        f"Quality ({trade.quality.label}) against diversity ({trade.diversity.label}) for each guidance "
        f"setting: mean ± standard error over seeds; plotted in {TRADEOFF}.",
        "",
    ]


def write_tradeoff_plot(trade: Tradeoff, path: Path) -> None:
    """x = diversity, y = quality, one point per guidance setting labelled with it, joined in the setting's order
    (one line for each combination of the other axes), with standard-error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 5))
    for line in dict.fromkeys(p.others for p in trade.points):
        # (x, y, x error, y error, setting) of the line's points that have both figures
        drawn = [
            (p.diversity[0], p.quality[0], p.diversity[1] or 0.0, p.quality[1] or 0.0, p.setting)
            for p in trade.points
            if p.others == line and p.quality[0] is not None and p.diversity[0] is not None
        ]
        if not drawn:
            continue
        xs, ys, xerr, yerr, settings = (list(column) for column in zip(*drawn))
        ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, marker="o", capsize=3, label=line or None)
        for x, y, setting in zip(xs, ys, settings):
            ax.annotate(setting, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set(
        xlabel=f"{trade.diversity.label} ({'lower' if trade.diversity.lower_is_better else 'higher'}: more diverse)",
        ylabel=f"{trade.quality.label} ({'lower' if trade.quality.lower_is_better else 'higher'} is better)",
        title=f"guidance trade-off over {', '.join(trade.axes)} (mean ± s.e. over seeds)",
    )
    if any(p.others for p in trade.points):
        ax.legend(fontsize=8)
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


def report_summary(summary: SweepSummary, console: Console, folder: Optional[Path]) -> SweepSummary:
    """Write summary.csv, summary.md and summary.png into ``folder`` (unless None) and print the table."""
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        summary.files = {kind: folder / name for kind, name in FILES.items()}
        write_csv(summary, summary.files["csv"])
        write_markdown(summary, summary.files["md"])
        write_plot(summary, summary.files["png"])
        if (trade := summary.tradeoff) is not None:
            summary.files["tradeoff"] = folder / TRADEOFF
            write_tradeoff_plot(trade, summary.files["tradeoff"])
    console.print(rich_table(summary))
    for line in _failure_lines(summary):
        console.print(f"[red]{line[2:]}[/]")
    if folder is not None:
        console.print(f"wrote {', '.join(str(p) for p in summary.files.values())}")
    return summary
