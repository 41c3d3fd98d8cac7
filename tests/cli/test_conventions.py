"""Habits from other tools: Hydra's ``+key=value`` and ``~key`` on the command line; ``sandbox summary`` over any
set of run folders and sweeps."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from sandbox import cli
from sandbox.errors import RecipeError
from sandbox.recipe import load_recipe
from sandbox.tools.summary import summarize_runs


@pytest.fixture
def based(tiny_recipe):
    """A recipe that sets train.lr and train.steps over the tiny recipe."""
    path = tiny_recipe.parent / "based.yaml"
    path.write_text("base: tiny.yaml\ntrain: {steps: 7, lr: 0.001}\n")
    return path


def test_plus_adds_like_a_plain_override(based):
    assert load_recipe(based, ["+train.steps=5"]).train.steps == 5
    assert load_recipe(based, ["++train.steps=6"]).train.steps == 6
    assert load_recipe(based, ["+denoiser.hidden=8"]).components["denoiser"][1].hidden == 8


def test_tilde_deletes_a_key_so_it_takes_its_default(based):
    assert load_recipe(based, ["~train.steps"]).train.steps == 1000  # the typed default, not the base's 30
    assert load_recipe(based, ["~train.lr=0.001"]).train.lr == 2e-4
    assert load_recipe(based, ["train.steps=3", "~train.steps"]).train.steps == 1000  # in order, as Hydra
    assert load_recipe(based, ["~train.steps", "train.steps=9"]).train.steps == 9
    assert load_recipe(based, ["~denoiser.hidden"]).components["denoiser"][1].hidden != 32  # the mlp's default


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("~train.stesp", "override '~train.stesp': the recipe does not set 'train.stesp', so there is nothing"),
        ("~train.lr=0.002", "override '~train.lr=0.002': 'train.lr' is 0.001 in the recipe, not 0.002"),
    ],
)
def test_tilde_on_a_key_the_recipe_does_not_set_says_so(based, override, expected):
    with pytest.raises(RecipeError) as info:
        load_recipe(based, [override])
    assert expected in str(info.value)


def test_the_command_line_takes_hydra_spellings_after_options(based, capsys):
    assert cli.main(["show", str(based), "~train.steps", "+train.lr=0.003"]) == 0
    out = capsys.readouterr().out
    assert "steps: 1000" in out and "lr: 0.003" in out
    assert cli.main(["show", str(based), "~train.nope"]) == 2
    assert "nothing to delete" in capsys.readouterr().err


# ------------------------------------------------------------------------ sandbox summary over runs and sweeps


def fake_run(folder: Path, schedule: str, seed: int, loss: float | None, *, lr: float = 2e-4) -> Path:
    """A run folder written by hand: its resolved recipe and, when ``loss`` is given, its summary.json."""
    folder.mkdir(parents=True)
    recipe = {
        "name": "tiny",
        "dataset": {"name": "toy2d"},
        "schedule": {"name": schedule},
        "train": {"steps": 10, "lr": lr},
        "run": {"seed": seed, "output": str(folder.parent), "device": "cpu"},
    }
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    if loss is not None:
        summary = {"train": {"final_val_loss_ema": loss, "steps": 10}, "sample_quality": {"generated": {"swd": loss}}}
        (folder / "summary.json").write_text(json.dumps(summary))
    else:
        (folder / "status.json").write_text(json.dumps({"status": "interrupted", "step": 4}))
    return folder


def test_summary_of_run_folders_groups_seeds_and_shows_the_keys_that_differ(tmp_path):
    runs = tmp_path / "runs"
    a = [fake_run(runs / f"linear-{s}", "linear", s, loss) for s, loss in enumerate((1.0, 3.0))]
    b = [fake_run(runs / f"cosine-{s}", "cosine", s, loss) for s, loss in enumerate((0.5, None))]
    other = fake_run(tmp_path / "elsewhere" / "fast", "cosine", 0, 0.25, lr=1e-3)

    summary = summarize_runs([*a, *b, other], console=Console(record=True, width=200))
    assert summary.axes == ["schedule.name", "train.lr"]  # the seed, output and device do not tell runs apart
    groups = {g.name: g for g in summary.groups}
    assert set(groups) == {"linear / 0.0002", "cosine / 0.0002", "cosine / 0.001"}
    assert groups["linear / 0.0002"].stats["sample_quality.generated.swd"] == (2.0, pytest.approx(2**0.5), 2)
    cosine = groups["cosine / 0.0002"]
    assert cosine.count("done") == 1 and cosine.count("missing") == 1  # the interrupted run
    assert "interrupted at step 4" in next(c.error for c in cosine.cells if c.status == "missing")
    assert summary.ranked[0] is groups["cosine / 0.001"] and summary.ranked[0].rank == 1

    again = summarize_runs([runs, runs / "linear-0"], console=Console(record=True, width=200))
    assert sorted(len(g.cells) for g in again.groups) == [2, 2]  # runs/ expands; a folder named twice counts once


def test_summary_mixes_sweeps_and_runs_on_the_command_line(tmp_path, capsys):
    sweep = tmp_path / "sweeps" / "s"
    (sweep / "cells").mkdir(parents=True)
    fake_run(sweep / "cells" / "c1", "cosine", 0, 0.75)
    cells = [{"id": "c1", "group": {"schedule.name": "cosine"}, "seed": 0, "status": "ran", "error": None}]
    axes = [{"key": "schedule.name", "labels": ["cosine"], "values": ["cosine"], "source": "recipe"}]
    (sweep / "sweep.json").write_text(json.dumps({"axes": axes, "cells": cells}))
    run = fake_run(tmp_path / "runs" / "linear", "linear", 0, 1.5)
    out = tmp_path / "report"

    assert cli.main(["summary", str(run), str(sweep), "--out", str(out), "--metric", "swd"]) == 0
    printed = capsys.readouterr().out
    assert "Summary of 2 runs" in printed and "schedule.name" in printed
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert {(r["schedule.name"], r["rank"]) for r in rows} == {("cosine", "1"), ("linear", "2")}
    assert (out / "summary.md").exists() and (out / "summary.png").exists()

    assert cli.main(["summary", str(tmp_path / "nothing-here")]) != 0
    assert "neither a run folder" in capsys.readouterr().err
