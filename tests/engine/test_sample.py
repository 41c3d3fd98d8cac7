"""``sandbox sample RUN_DIR``: samples from a run's EMA weights with any sampler, into a new folder each time."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from sandbox import cli

ROOT = Path(__file__).resolve().parents[2]

DIGITS_UNET = [
    "dataset.name=digits",
    "denoiser.name=unet",
    "denoiser.channels=16",
    "denoiser.channel_mult=[1,2]",
    "denoiser.attention_resolutions=[4]",
    "denoiser.groups=8",
    "denoiser.num_res_blocks=1",
    "train.steps=2",
    "train.batch_size=16",
    "train.log_every=1",
    "train.val_every=0",
    "train.sample_every=0",
    "train.warmup_steps=1",
    "eval.val_batches=1",
    "eval.num_samples=4",
    "eval.sample_batch=4",
    "sampler.steps=3",
]


def trained(recipe: Path, *overrides: str) -> Path:
    """Train the tiny recipe and return its run folder."""
    assert cli.main(["run", str(recipe), "run.threads=1", *overrides]) == 0
    (run_dir,) = (recipe.parent / "runs").iterdir()
    return run_dir


def new_folders(run_dir: Path) -> list[Path]:
    return sorted(p for p in (run_dir / "samples").iterdir() if p.is_dir())


@pytest.mark.slow
def test_another_sampler_writes_a_new_folder_with_its_nfe_and_quality(tiny_recipe, capsys):
    run_dir = trained(tiny_recipe)
    assert cli.main(["sample", str(run_dir), "sampler.name=dpmpp_2m", "sampler.steps=5", "--num", "40"]) == 0
    (folder,) = new_folders(run_dir)
    assert folder.name.startswith("dpmpp_2m-5-")
    assert {p.name for p in folder.iterdir()} == {"grid.png", "samples.pt", "summary.json"}
    samples = torch.load(folder / "samples.pt")
    assert samples.shape == (40, 2) and torch.isfinite(samples).all()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["num_samples"] == 40 and summary["nfe_per_sample"] == 5
    assert summary["sampler"] == {
        "name": "dpmpp_2m",
        "params": {"steps": 5, "grid": "schedule", "rho": 7.0, "clip_x0": False},
    }
    assert summary["overrides"] == ["sampler.name=dpmpp_2m", "sampler.steps=5"]
    assert summary["checkpoint"] == {"path": str(run_dir / "checkpoints" / "final.pt"), "step": 30}
    quality = summary["sample_quality"]
    assert math.isfinite(quality["generated"]["swd"]) and math.isfinite(quality["real_heldout"]["swd"])
    out = capsys.readouterr().out
    assert "NFE per sample" in out and "swd: generated / real held-out" in out


@pytest.mark.slow
def test_the_runs_own_sampler_and_seed_repeat_its_final_samples_and_folders_are_never_reused(tiny_recipe, monkeypatch):
    run_dir = trained(tiny_recipe)
    monkeypatch.setattr(time, "strftime", lambda *args: "20260101-000000")  # both calls in the same second
    assert cli.main(["sample", str(run_dir)]) == 0
    assert cli.main(["sample", str(run_dir)]) == 0
    monkeypatch.undo()
    first, second = new_folders(run_dir)
    assert (first.name, second.name) == ("ddim-10-20260101-000000", "ddim-10-20260101-000000-2")
    final = torch.load(run_dir / "samples" / "final.pt")
    assert torch.equal(torch.load(first / "samples.pt"), final)
    assert torch.equal(torch.load(second / "samples.pt"), final)
    assert cli.main(["sample", str(run_dir), "run.seed=1", "eval.sample_batch=64"]) == 0
    other = next(p for p in new_folders(run_dir) if p not in (first, second))
    assert not torch.equal(torch.load(other / "samples.pt"), final)


@pytest.mark.parametrize(
    "override, key",
    [("train.lr=1", "train.lr"), ("denoiser.hidden=64", "denoiser.hidden"), ("run.output=elsewhere", "run.output")],
)
@pytest.mark.slow
def test_an_override_of_a_training_key_is_refused_naming_it(tiny_recipe, capsys, override, key):
    run_dir = trained(tiny_recipe)
    capsys.readouterr()
    assert cli.main(["sample", str(run_dir), override]) == 2
    err = capsys.readouterr().err
    assert f"recipe key '{key}': cannot change when sampling" in err and "Traceback" not in err
    assert new_folders(run_dir) == []


@pytest.mark.slow
def test_a_corrupt_checkpoint_or_a_folder_that_is_no_run_is_one_clear_error(tiny_recipe, tmp_path, capsys):
    run_dir = trained(tiny_recipe, "train.checkpoint_every=10")
    (run_dir / "checkpoints" / "final.pt").write_bytes(os.urandom(4096))
    capsys.readouterr()
    assert cli.main(["sample", str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert "final.pt cannot be read" in err and "--checkpoint" in err and "step_000020.pt" in err
    assert "Traceback" not in err
    assert new_folders(run_dir) == []
    assert cli.main(["sample", str(tmp_path)]) == 1
    assert "is not a run folder" in capsys.readouterr().err


@pytest.mark.slow
def test_an_interrupted_run_samples_from_its_latest_step_checkpoint(tiny_recipe, capsys):
    run_dir = trained(tiny_recipe, "train.checkpoint_every=10")
    (run_dir / "checkpoints" / "final.pt").unlink()
    capsys.readouterr()
    assert cli.main(["sample", str(run_dir), "--num", "8"]) == 0
    assert "the run is unfinished" in capsys.readouterr().out
    (folder,) = new_folders(run_dir)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["checkpoint"] == {"path": str(run_dir / "checkpoints" / "step_000020.pt"), "step": 20}
    assert summary["num_samples"] == 8
    earlier = run_dir / "checkpoints" / "step_000010.pt"
    assert cli.main(["sample", str(run_dir), "--num", "8", "--checkpoint", str(earlier)]) == 0
    (chosen,) = (p for p in new_folders(run_dir) if p != folder)
    assert json.loads((chosen / "summary.json").read_text())["checkpoint"] == {"path": str(earlier), "step": 10}


@pytest.mark.slow
def test_png_writes_one_8x8_image_per_sample(tiny_recipe):
    run_dir = trained(tiny_recipe, *DIGITS_UNET)
    assert cli.main(["sample", str(run_dir), "--num", "5", "--png"]) == 0
    (folder,) = new_folders(run_dir)
    pngs = sorted((folder / "png").iterdir())
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(5)]
    samples = torch.load(folder / "samples.pt")
    for path, sample in zip(pngs, samples, strict=True):
        with Image.open(path) as image:
            assert image.size == (8, 8) and image.mode == "L"
            pixels = torch.tensor(list(image.getdata()), dtype=torch.float32).reshape(8, 8)
        expected = ((sample[0].clamp(-1, 1) + 1) * 127.5).round()
        assert torch.equal(pixels, expected)
    assert json.loads((folder / "summary.json").read_text())["outputs"]["png"] == "png/"


@pytest.mark.slow
def test_an_analytic_denoiser_samples_without_a_checkpoint(tmp_path, capsys):
    recipe = ROOT / "recipes" / "oracle_mixture.yaml"
    assert cli.main(["run", str(recipe), f"run.output={tmp_path}", "eval.num_samples=16", "run.threads=1"]) == 0
    (run_dir,) = tmp_path.iterdir()
    assert cli.main(["sample", str(run_dir), "sampler.name=heun", "sampler.steps=3", "--num", "16"]) == 0
    (folder,) = new_folders(run_dir)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["checkpoint"] == {"path": None, "step": 0} and summary["nfe_per_sample"] == 5
    capsys.readouterr()
    assert cli.main(["sample", str(run_dir), "--checkpoint", str(tmp_path / "x.pt")]) == 1
    assert "analytic denoiser, which has no checkpoint" in capsys.readouterr().err
    assert cli.main(["sample", str(run_dir), "--png"]) == 1
    assert "--png needs images" in capsys.readouterr().err
    assert new_folders(run_dir) == [folder]


def test_another_sampler_keeps_the_runs_clip_x0_unless_the_overrides_set_it(tmp_path):
    """The quickstart clips x0 (its data lie in [-1, 1]); a sampler asked for in its place does too, and keeps
    its own other defaults (euler_ancestral's eta is its own 1.0, not DDIM's 0.0)."""
    from sandbox.engine.sample import sampling_recipe

    (tmp_path / "recipe.yaml").write_text((ROOT / "recipes" / "quickstart.yaml").read_text())

    def sampler(*overrides: str):
        return sampling_recipe(tmp_path, list(overrides)).components["sampler"]

    assert sampler()[1].clip_x0 is True
    name, params = sampler("sampler.name=unipc", "sampler.steps=10")
    assert (name, params.clip_x0, params.steps) == ("unipc", True, 10)
    assert sampler("sampler.name=unipc", "sampler.clip_x0=false")[1].clip_x0 is False
    name, params = sampler("sampler.name=euler_ancestral")
    assert params.clip_x0 is True and params.eta == 1.0
    assert sampler("sampler={name: dpmpp_2m, steps: 10}")[1].clip_x0 is False  # a whole section is taken as given
