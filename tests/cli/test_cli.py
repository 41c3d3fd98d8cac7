"""The command line: listing without torch, clear errors, and ``sandbox run`` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from rich.console import Console

from sandbox import cli
from sandbox.engine.run import run_recipe
from sandbox.recipe import load_recipe


def sandbox(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sandbox.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


@pytest.mark.parametrize("command", [["--help"], ["list"], ["plugins"]])
def test_listing_commands_do_not_import_torch(command):
    code = (
        f"import sys; from sandbox import cli; rc = cli.main({command!r}); "
        "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_list_shows_every_kind_with_provider(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for word in (
        "datasets",
        "schedules",
        "denoisers",
        "samplers",
        "cosine",
        "ddim",
        "unet",
        "digits",
        "diffusion-sandbox",
    ):
        assert word in out


def test_plugins_shows_distribution_and_version(capsys):
    from sandbox import __version__

    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "diffusion-sandbox" in out and __version__ in out


def test_show_prints_the_resolved_recipe(tiny_recipe, capsys):
    # fmt: off
    assert cli.main(["show", str(tiny_recipe), "train.steps=9"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["train"]["steps"] == 9
    assert shown["train"]["lr"] == 2e-4              # a typed default, made explicit
    assert shown["denoiser"]["dropout"] == 0.0       # a component default, made explicit
    # fmt: on


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.steps=abc", "recipe key 'train.steps'"),
        ("sampler.name=ddin", "Did you mean 'ddim'"),
        ("denoiser.hiden=3", "recipe key 'denoiser.hiden'"),
        ("dataset.shape=spiral", "recipe key 'dataset.shape'"),
    ],
)
def test_bad_input_exits_non_zero_with_one_message_and_no_traceback(tiny_recipe, override, fragment):
    result = sandbox("run", str(tiny_recipe), override)
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tiny_recipe.parent / "runs").exists() or not any((tiny_recipe.parent / "runs").iterdir())


def test_run_end_to_end_writes_every_output_and_never_overwrites(tiny_recipe):
    console = Console(record=True, width=120)
    recipe = load_recipe(tiny_recipe)
    first = run_recipe(recipe, console=console)
    second = run_recipe(recipe, console=Console(record=True, width=120))
    assert first != second and first.exists() and second.exists()

    saved = load_recipe(first / "recipe.yaml")
    assert saved.to_dict() | {"name": recipe.name} == recipe.to_dict() | {"name": recipe.name}

    lines = [json.loads(line) for line in (first / "metrics.jsonl").read_text().splitlines()]
    steps = [line["step"] for line in lines]
    assert steps == sorted(steps) and steps[-1] == 30
    assert {"train_loss", "images_per_s", "val_loss", "val_loss_ema"} <= set(lines[-1])
    assert sum("val_loss" in line for line in lines) == 2  # val_every 15 over 30 steps

    ckpt = torch.load(first / "checkpoints" / "final.pt", weights_only=False)
    assert ckpt["step"] == 30 and {"model", "ema", "optimizer"} <= set(ckpt)

    assert (first / "samples" / "step_000020.png").stat().st_size > 0
    assert (first / "samples" / "final.png").stat().st_size > 0
    samples = torch.load(first / "samples" / "final.pt")
    assert samples.shape == (64, 2)

    summary = json.loads((first / "summary.json").read_text())
    assert summary["components"]["sampler"]["name"] == "ddim"
    assert summary["components"]["denoiser"]["provider"].startswith("diffusion-sandbox")
    assert summary["sampling"]["nfe_per_sample"] == 10
    assert summary["train"]["steps"] == 30
    assert summary["denoiser_parameters"] > 0
    assert set(summary["sample_quality"]) == {"generated", "real_heldout"}

    text = console.export_text()
    assert "mlp" in text and "ddim" in text and str(first) in text.replace("\n", "")


@pytest.mark.slow
def test_cpu_run_is_repeatable_with_a_seed(tiny_recipe):
    recipe = load_recipe(tiny_recipe, ["train.sample_every=0"])
    a = run_recipe(recipe, console=Console(record=True))
    b = run_recipe(recipe, console=Console(record=True))
    losses = lambda d: [
        (r["step"], r.get("train_loss"), r.get("val_loss"))
        for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())
    ]
    assert losses(a) == losses(b)
    assert torch.equal(torch.load(a / "samples" / "final.pt"), torch.load(b / "samples" / "final.pt"))
