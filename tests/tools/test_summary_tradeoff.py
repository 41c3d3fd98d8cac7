"""``sandbox summary`` of a guidance sweep: the quality-against-diversity table in summary.md and tradeoff.png."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import pytest
from rich.console import Console

from sandbox.tools.summary import summarize

ACCURACY, SPREAD = "sample_quality.generated.class_accuracy", "sample_quality.generated.class_spread"

# guidance.scale -> per seed: {metric: value} (the generated figures), or "failed"; in plan order, not sorted
GUIDED: dict[Any, list[Any]] = {
    1: [{"class_accuracy": 0.5, "class_spread": 1.0}, {"class_accuracy": 0.7, "class_spread": 0.8}],
    3: [{"class_accuracy": 0.95, "class_spread": 0.4}, "failed"],
    2: [{"class_accuracy": 0.8, "class_spread": 0.7}, {"class_accuracy": 0.9, "class_spread": 0.5}],
}


def write_sweep(folder: Path, axes: list[dict[str, Any]], cells: dict[tuple[str, ...], list[Any]]) -> Path:
    """A sweep folder written by hand: ``cells`` maps each group's labels to its seeds' generated figures."""
    entries = []
    for labels, outcomes in cells.items():
        for seed, outcome in enumerate(outcomes):
            cell_id = "-".join(labels) + f"-{seed}"
            entries.append(
                {
                    "id": cell_id,
                    "group": dict(zip((a["key"] for a in axes), labels)),
                    "seed": seed,
                    "overrides": [],
                    "status": "ran",
                    "error": None,
                }
            )
            cell = folder / "cells" / cell_id
            cell.mkdir(parents=True)
            if outcome == "failed":
                (cell / "error.json").write_text(json.dumps({"message": "RuntimeError: boom", "traceback": ""}))
                continue
            generated = {"confident_share": 0.5 + 0.1 * seed, **outcome}
            summary = {"train": {"final_val_loss_ema": 0.1}, "sample_quality": {"generated": generated}}
            (cell / "summary.json").write_text(json.dumps(summary))
    plan = {"recipe": "x.yaml", "overrides": [], "seeds": 2, "axes": axes, "cells": entries}
    (folder / "sweep.json").write_text(json.dumps(plan))
    return folder


def axis(key: str, values: list[Any]) -> dict[str, Any]:
    return {"key": key, "labels": [str(v) for v in values], "values": values, "source": "override"}


def guidance_sweep(folder: Path, figures: Optional[dict[Any, list[Any]]] = None) -> Path:
    figures = GUIDED if figures is None else figures
    return write_sweep(folder, [axis("guidance.scale", list(figures))], {(str(k),): v for k, v in figures.items()})


def section(markdown: str) -> list[str]:
    """The rows of summary.md's trade-off table (after its header and rule)."""
    lines = markdown.split("## guidance trade-off\n", 1)[1].splitlines()
    return [line for line in lines if line.startswith("| ")][2:]


def quiet() -> Console:
    return Console(record=True, width=250)


def test_the_tradeoff_table_and_plot_of_a_guidance_sweep(tmp_path):
    summary = summarize(guidance_sweep(tmp_path), console=quiet())
    trade = summary.tradeoff
    assert trade is not None and (trade.quality.key, trade.diversity.key) == (ACCURACY, SPREAD)
    assert [p.setting for p in trade.points] == ["1", "2", "3"]  # in order of the value, not the plan's
    first = trade.points[0]
    assert first.quality[:1] == (pytest.approx(0.6),) and first.quality[1] == pytest.approx(0.1)  # s.e. = std/sqrt(2)
    assert first.diversity[0] == pytest.approx(0.9) and first.diversity[1] == pytest.approx(0.1)
    assert trade.points[2].quality == (0.95, None, 1)  # the failed seed is left out
    markdown = (tmp_path / "summary.md").read_text()
    assert "| guidance.scale | generated.class_accuracy ↑ | generated.class_spread ↑ | seeds |" in markdown
    assert section(markdown) == [
        "| 1 | 0.6 ± 0.10 | 0.9 ± 0.10 | 2 |",
        "| 2 | 0.85 ± 0.050 | 0.6 ± 0.10 | 2 |",
        "| 3 | 0.95 | 0.4 | 1 |",
    ]
    assert (tmp_path / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    assert summary.files["tradeoff"] == tmp_path / "tradeoff.png"


def test_without_accuracy_or_spread_the_ranking_metric_and_coverage_stand_in(tmp_path):
    figures = {0: [{"class_coverage": 1.0}], 4: [{"class_coverage": 0.6}]}
    summary = summarize(guidance_sweep(tmp_path, figures), metrics=["confident_share"], console=quiet())
    trade = summary.tradeoff
    assert trade is not None and trade.quality.key == "sample_quality.generated.confident_share"
    assert trade.diversity.key == "sample_quality.generated.class_coverage"
    assert section((tmp_path / "summary.md").read_text()) == ["| 0 | 0.5 | 1 | 1 |", "| 4 | 0.5 | 0.6 | 1 |"]
    assert (tmp_path / "tradeoff.png").exists()


def test_other_axes_give_one_line_each(tmp_path):
    cells = {
        (scale, steps): [{"class_accuracy": 0.5 + 0.1 * int(scale) + 0.01 * int(steps), "class_spread": 1.0}]
        for steps in ("10", "50")
        for scale in ("2", "1")
    }
    write_sweep(tmp_path, [axis("guidance.scale", [2, 1]), axis("sampler.steps", [10, 50])], cells)
    summarize(tmp_path, console=quiet())
    markdown = (tmp_path / "summary.md").read_text()
    assert (
        "| guidance.scale | sampler.steps | generated.class_accuracy ↑ | generated.class_spread ↑ | seeds |"
        in markdown
    )
    assert section(markdown) == [
        "| 1 | 10 | 0.7 | 1 | 1 |",
        "| 2 | 10 | 0.8 | 1 | 1 |",
        "| 1 | 50 | 1.1 | 1 | 1 |",
        "| 2 | 50 | 1.2 | 1 | 1 |",
    ]
    assert (tmp_path / "tradeoff.png").exists()


@pytest.mark.parametrize("case", ["no guidance axis", "no diversity figure"])
def test_no_tradeoff_without_a_guidance_axis_or_a_diversity_figure(tmp_path, case):
    if case == "no guidance axis":
        cells = {(s,): [{"class_accuracy": 0.9, "class_spread": 0.5}] for s in ("10", "50")}
        write_sweep(tmp_path, [axis("sampler.steps", [10, 50])], cells)
    else:
        guidance_sweep(tmp_path, {1: [{"class_accuracy": 0.5}], 2: [{"class_accuracy": 0.8}]})
    summary = summarize(tmp_path, console=quiet())
    assert summary.tradeoff is None and "tradeoff" not in summary.files
    assert "guidance trade-off" not in (tmp_path / "summary.md").read_text()
    assert not (tmp_path / "tradeoff.png").exists() and (tmp_path / "summary.png").exists()
