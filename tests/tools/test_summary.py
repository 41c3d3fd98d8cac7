"""``sandbox summary``: statistics over seeds, ranking direction, baseline difference and the files written."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from sandbox import cli
from sandbox.errors import RecipeError
from sandbox.tools.summary import lower_is_better, mean_std, parse_metric, summarize, summary_folder

LOSS, SHARE = "train.final_val_loss_ema", "sample_quality.generated.confident_share"

# group (denoiser, schedule) -> per seed: (val loss, confident share), "failed" or "invalid"
CELLS = {
    ("unet", "linear"): [(1.0, 0.50), (3.0, 0.70)],
    ("resnet", "linear"): [(0.5, 0.20), (0.7, 0.40)],
    ("unet", "cosine"): [(4.0, 0.90), "failed"],
    ("resnet", "cosine"): ["invalid", "invalid"],
}


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    """A sweep folder written by hand, with known numbers."""
    cells = []
    for (denoiser, schedule), outcomes in CELLS.items():
        for seed, outcome in enumerate(outcomes):
            cell_id = f"{denoiser}-{schedule}-{seed}"
            entry = {
                "id": cell_id,
                "group": {"denoiser": denoiser, "schedule.name": schedule},
                "seed": seed,
                "overrides": [],
                "status": "invalid" if outcome == "invalid" else "ran",
                "error": "recipe key 'x': nope" if outcome == "invalid" else None,
            }
            cells.append(entry)
            folder = tmp_path / "cells" / cell_id
            if outcome == "invalid":
                continue
            folder.mkdir(parents=True)
            if outcome == "failed":
                (folder / "error.json").write_text(json.dumps({"message": "RuntimeError: boom", "traceback": ""}))
                continue
            loss, share = outcome
            (folder / "summary.json").write_text(
                json.dumps(
                    {
                        "train": {"final_val_loss_ema": loss, "images_per_s": 100.0 * (seed + 1), "steps": 10},
                        "sample_quality": {
                            "generated": {"confident_share": share, "class_coverage": 0.9},
                            "real_heldout": {"confident_share": 0.95, "class_coverage": 0.99},
                        },
                    }
                )
            )
            (folder / "metrics.jsonl").write_text(
                "".join(
                    json.dumps({"step": step, "train_loss": 9.0, "val_loss_ema": loss * (3 - step / 5)}) + "\n"
                    for step in (5, 10)
                )
            )
    axes = [
        {
            "key": "denoiser",
            "labels": ["unet", "resnet"],
            "source": "recipe",
            "values": [{"name": "unet"}, {"name": "resnet", "channels": 32}],
        },
        {"key": "schedule.name", "labels": ["linear", "cosine"], "values": ["linear", "cosine"], "source": "recipe"},
    ]
    (tmp_path / "sweep.json").write_text(
        json.dumps({"recipe": "x.yaml", "overrides": [], "seeds": 2, "axes": axes, "cells": cells})
    )
    return tmp_path


def quiet() -> Console:
    return Console(record=True, width=250)


def by_name(summary):
    return {g.name: g for g in summary.groups}


def test_mean_std_over_seeds_and_default_metrics(sweep_dir):
    summary = summarize(sweep_dir, console=quiet(), write=False)
    assert [m.key for m in summary.metrics] == [
        SHARE,
        "sample_quality.generated.class_coverage",
        LOSS,
        "train.images_per_s",
    ]  # sample quality ranks by default
    # fmt: off
    groups = by_name(summary)
    mean, std, n = groups["unet / linear"].stats[LOSS]
    assert (mean, n) == (2.0, 2) and std == pytest.approx(math.sqrt(2.0))   # sample std, n - 1
    assert groups["resnet / linear"].stats[SHARE][0] == pytest.approx(0.3)
    assert groups["unet / cosine"].stats[LOSS] == (4.0, None, 1)            # the failed seed is left out
    assert groups["resnet / cosine"].stats[LOSS] == (None, None, 0)
    assert [groups["unet / cosine"].count(s) for s in ("done", "failed")] == [1, 1]
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0, 3)
    # fmt: on


def test_ranking_follows_each_metrics_direction(sweep_dir):
    loss_first = summarize(sweep_dir, metrics=[LOSS], console=quiet(), write=False)
    assert [g.name for g in loss_first.ranked][:3] == ["resnet / linear", "unet / linear", "unet / cosine"]
    assert loss_first.ranked[3].rank is None  # nothing finished: unranked, last
    share_first = summarize(sweep_dir, metrics=["confident_share", LOSS], console=quiet(), write=False)
    assert share_first.metrics[0].key == SHARE and not share_first.metrics[0].lower_is_better
    assert [g.name for g in share_first.ranked][:3] == ["unet / cosine", "unet / linear", "resnet / linear"]
    flipped = summarize(sweep_dir, metrics=[f"{SHARE}:min"], console=quiet(), write=False)
    assert flipped.ranked[0].name == "resnet / linear"


@pytest.mark.parametrize(
    "key, lower",
    [
        ("train.final_val_loss_ema", True),
        ("generated.swd", True),
        ("w2", True),
        ("energy_distance", True),
        ("confident_share", False),
        ("train.images_per_s", False),
        ("class_coverage", False),
    ],
)
def test_lower_is_better_rule(key, lower):
    assert lower_is_better(key) is lower
    assert parse_metric(key).lower_is_better is lower


def test_difference_to_the_baseline_group(sweep_dir):
    first = by_name(summarize(sweep_dir, console=quiet(), write=False))
    assert first["unet / linear"].baseline  # the first group in plan order
    assert first["resnet / linear"].diff[LOSS] == pytest.approx(-1.4)
    chosen = by_name(
        summarize(sweep_dir, baseline="denoiser.name=resnet,schedule.name=linear", console=quiet(), write=False)
    )
    assert chosen["resnet / linear"].baseline and not chosen["unet / linear"].baseline
    assert chosen["unet / linear"].diff[LOSS] == pytest.approx(1.4)
    assert chosen["resnet / cosine"].diff[LOSS] is None
    assert by_name(
        summarize(sweep_dir, baseline="denoiser.channels=32,schedule.name=linear", console=quiet(), write=False)
    )["resnet / linear"].baseline  # keys inside a section value
    with pytest.raises(RecipeError, match="matches 2 groups"):
        summarize(sweep_dir, baseline="denoiser=unet", console=quiet(), write=False)
    with pytest.raises(RecipeError, match="matches 0 groups"):
        summarize(sweep_dir, baseline="denoiser=mlp", console=quiet(), write=False)


def test_csv_markdown_and_plot_are_written(sweep_dir):
    console = quiet()
    summary = summarize(sweep_dir, metrics=[LOSS, SHARE], console=console)
    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert next(r["denoiser"] + "/" + r["schedule.name"] for r in rows) == "resnet/linear"
    first = rows[0]
    assert float(first[f"{LOSS}.mean"]) == pytest.approx(0.6) and first[f"{LOSS}.n"] == "2"
    assert float(first[f"{LOSS}.diff"]) == pytest.approx(-1.4)
    assert [r["failed"] for r in rows] == ["0", "0", "1", "0"] and rows[3]["invalid"] == "2"
    markdown = (sweep_dir / "summary.md").read_text()
    assert markdown.startswith("| rank | denoiser | schedule.name | cells |")
    assert "| 2 | unet | linear | 2/2 | 2 ± 1.4 |" in markdown
    assert "1/2 (1 failed)" in markdown and "RuntimeError: boom" in markdown
    assert (sweep_dir / "summary.png").read_bytes()[:4] == b"\x89PNG"
    text = console.export_text()
    assert "resnet" in text and "baseline" in text and str(summary.files["png"]) in text.replace("\n", "")


def test_summary_command(sweep_dir, capsys, tmp_path):
    assert cli.main(["summary", str(sweep_dir), "--metric", "confident_share"]) == 0
    capsys.readouterr()
    own = sweep_dir / "summaries" / "confident_share" / "summary.csv"  # the sweep's own files are left alone
    assert "confident_share.mean" in own.read_text().splitlines()[0]
    assert cli.main(["summary", str(tmp_path / "nowhere")]) == 1
    assert "sweep.json" in capsys.readouterr().err
    assert cli.main(["summary", str(sweep_dir), "--metric", "nope"]) == 2


def test_a_diverged_cell_is_flagged_and_not_ranked(sweep_dir, capsys):
    """A cell whose samples diverged (sample_health) leaves its group's statistics and is reported."""
    folder = sweep_dir / "cells" / "resnet-linear-0"
    data = json.loads((folder / "summary.json").read_text())
    data["sample_quality"]["generated"]["confident_share"] = 0.99  # a garbage figure that would rank first
    data["sample_health"] = {"finite_share": 1.0, "in_range_share": 0.06, "diverged": True}
    (folder / "summary.json").write_text(json.dumps(data))
    summary = summarize(sweep_dir, console=Console(record=True, width=200))
    groups = {g.name: g for g in summary.groups}
    resnet = groups["resnet / linear"]
    assert resnet.count("diverged") == 1 and resnet.stats[SHARE][:1] == (0.40,) and resnet.stats[SHARE][2] == 1
    assert summary.ranked[0].name == "unet / cosine"
    assert "1/2 (1 diverged)" in (sweep_dir / "summary.md").read_text()
    assert "resnet-linear-0 (resnet / linear, seed 0): samples diverged: 100% finite, 6% within" in " ".join(
        capsys.readouterr().out.split()
    )
    other = sweep_dir / "cells" / "resnet-linear-1" / "summary.json"
    other.write_text(json.dumps({**json.loads(other.read_text()), "sample_health": data["sample_health"]}))
    again = summarize(sweep_dir, console=Console(record=True, width=200), write=False)
    last = again.ranked[-2:]  # every cell diverged: unranked, after the ranked groups
    assert "resnet / linear" in [g.name for g in last] and all(g.rank is None for g in last)


def test_a_torn_summary_json_is_a_missing_cell_not_a_traceback(sweep_dir):
    (sweep_dir / "cells" / "unet-linear-1" / "summary.json").write_text('{"train": {"final_val_')
    with pytest.warns(UserWarning, match="unreadable"):
        summary = summarize(sweep_dir, console=Console(record=True, width=200), write=False)
    unet = {g.name: g for g in summary.groups}["unet / linear"]
    assert unet.count("missing") == 1 and unet.count("done") == 1


def test_a_live_sweep_says_what_its_unfinished_cells_are_doing(sweep_dir):
    """A cell the running sweep process is training, and one not started, as ``sandbox sweep --status`` has them."""
    plan = json.loads((sweep_dir / "sweep.json").read_text())
    plan["state"], plan["pid"] = "running", os.getpid()
    for entry in plan["cells"]:
        if entry["id"] == "unet-linear-1":
            entry["status"] = "running"
    (sweep_dir / "sweep.json").write_text(json.dumps(plan))
    folder = sweep_dir / "cells" / "unet-linear-1"
    (folder / "summary.json").unlink()
    (folder / "status.json").write_text(json.dumps({"status": "training", "step": 30}))
    shutil.rmtree(sweep_dir / "cells" / "resnet-linear-0")
    console = Console(record=True, width=200)
    summary = summarize(sweep_dir, console=console, write=False)
    groups = {g.name: g for g in summary.groups}
    assert groups["unet / linear"].count("missing") == 1
    text = console.export_text()
    assert "1/2 (1 missing: 1 running)" in text and "(1 missing: 1 to run)" in text


def test_a_summary_with_other_metrics_leaves_the_sweeps_own_files_unchanged(sweep_dir, capsys, tmp_path):
    """``sandbox summary SWEEP`` rewrites the sweep's own files (as ``sandbox sweep`` does at its end); with
    ``--metric`` or ``--baseline`` it writes into ``SWEEP/summaries/<...>/``, or ``--out``, and says where."""
    base = "denoiser=resnet,schedule.name=linear"
    assert cli.main(["summary", str(sweep_dir)]) == 0
    own = {name: (sweep_dir / name).read_bytes() for name in ("summary.csv", "summary.md", "summary.png")}
    capsys.readouterr()

    assert cli.main(["summary", str(sweep_dir), "--metric", f"{SHARE}:max", "--baseline", base]) == 0
    folder = sweep_dir / "summaries" / f"{SHARE}_max@denoiser=resnet_schedule.name=linear"
    assert folder == summary_folder(sweep_dir, [f"{SHARE}:max"], base)
    printed = capsys.readouterr().out.replace("\n", "")
    for name in ("summary.csv", "summary.md", "summary.png"):
        assert (sweep_dir / name).read_bytes() == own[name]
        assert (folder / name).is_file() and str(folder / name) in printed
    assert f"{SHARE}.mean" in (folder / "summary.csv").read_text().splitlines()[0]
    assert f"{LOSS}.mean" not in (folder / "summary.csv").read_text()
    assert "| rank | denoiser | schedule.name |" in (folder / "summary.md").read_text()  # the sweep's axes

    assert cli.main(["summary", str(sweep_dir), "--metric", LOSS, "--out", str(tmp_path / "elsewhere")]) == 0
    assert f"{LOSS}.mean" in (tmp_path / "elsewhere" / "summary.csv").read_text().splitlines()[0]
    assert all((sweep_dir / name).read_bytes() == own[name] for name in own)
    assert sorted(p.name for p in (sweep_dir / "summaries").iterdir()) == [folder.name]
