"""The likelihood as a run's metric and as ``sandbox likelihood``: records, units, bounds, and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from sandbox import cli

ROOT = Path(__file__).resolve().parents[2]
ORACLE = ROOT / "recipes" / "oracle_mixture.yaml"
SMALL = ["eval.num_samples=16", "eval.sample_batch=16", "eval.grid_samples=16", "run.threads=1"]


def oracle_run(tmp_path: Path, *overrides: str) -> Path:
    assert cli.main(["run", str(ORACLE), f"run.output={tmp_path}", *SMALL, *overrides]) == 0
    (run_dir,) = tmp_path.iterdir()
    return run_dir


@pytest.mark.slow
def test_a_runs_nll_metric_gives_every_estimator_and_the_exact_value(tmp_path, capsys):
    run_dir = oracle_run(
        tmp_path,
        "eval.metrics=[nll]",
        "eval.nll.estimators=[vlb,elbo,ode]",
        "eval.nll.items=300",
        "eval.nll.batch=150",
        "eval.nll.rtol=1e-5",
        "eval.nll.atol=1e-5",
    )
    records = json.loads((run_dir / "summary.json").read_text())["likelihood"]
    assert set(records) == {"vlb", "elbo", "ode", "exact"}
    exact = records["exact"]["nll"]
    assert all(r["unit"] == "nats/dim" and r["items"] == 300 for r in records.values())
    assert abs(records["ode"]["nll"] - exact) < 1e-3 and not records["ode"]["bound"]
    assert records["ode"]["divergence"] == "exact" and not records["ode"]["dequantized"]
    for name in ("vlb", "elbo"):
        assert records[name]["bound"] and records[name]["nll"] > exact - 3 * records[name]["stderr"]
        terms = records[name]["terms"]
        assert sum(terms.values()) == pytest.approx(records[name]["nll"])
    assert records["vlb"]["nfe_per_item"] == 1000 and records["elbo"]["nfe_per_item"] == 16
    out = capsys.readouterr().out
    assert "nll (ode), nats/dim" in out and "(bound)" in out


@pytest.mark.slow
def test_sandbox_likelihood_scores_a_finished_run_into_a_new_folder(tmp_path, capsys):
    run_dir = oracle_run(tmp_path)
    argv = ["likelihood", str(run_dir), "--estimator", "elbo", "--items", "64", "eval.nll.draws=4"]
    assert cli.main(argv) == 0
    assert cli.main(argv) == 0  # a second call never overwrites the first
    folders = sorted((run_dir / "likelihood").iterdir())
    assert len(folders) == 2 and all(f.name.startswith("elbo-") for f in folders)
    result = json.loads((folders[0] / "likelihood.json").read_text())
    assert result["overrides"] == ["eval.nll.draws=4", "eval.nll.estimators=[elbo]", "eval.nll.items=64"]
    record = result["likelihood"]["elbo"]
    assert record["items"] == 64 and record["draws"] == 4 and math.isfinite(record["nll"])
    assert "Likelihood of 'oracle_mixture'" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--rtol", "0"], "recipe key 'eval.nll.rtol': 0.0; expected a number > 0"),
        (["--atol", "nan"], "recipe key 'eval.nll.atol'"),
        (["--estimator", "exact"], "recipe key 'eval.nll.estimators': ['exact']"),
        (["schedule.name=edm", "--estimator", "vlb"], "cannot change when sampling"),
        (["eval.nll.dequantize=true"], "recipe key 'eval.nll.dequantize': True: dequantisation needs discrete data"),
        (["eval.nll.split=test"], "recipe key 'eval.nll.split'"),
    ],
)
def test_bad_likelihood_settings_are_one_message_and_exit_2(tmp_path, capsys, argv, message):
    run_dir = oracle_run(tmp_path)
    capsys.readouterr()
    assert cli.main(["likelihood", str(run_dir), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (run_dir / "likelihood").exists()  # refused before any work


def test_zero_items_is_refused_by_the_command_line(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["likelihood", "some_run", "--items", "0"])
    assert exit.value.code == 2 and "expected 1 or more" in capsys.readouterr().err


@pytest.mark.slow
def test_the_discrete_bound_on_a_continuous_schedule_stops_a_run_before_any_work(tmp_path, capsys):
    argv = ["run", str(ORACLE), f"run.output={tmp_path}", *SMALL, "schedule.name=edm", "eval.metrics=[nll]"]
    assert cli.main([*argv, "eval.nll.estimators=[vlb]"]) == 2
    err = capsys.readouterr().err
    assert "recipe key 'eval.nll.estimators': ['vlb']" in err and "schedule 'edm' is continuous" in err
    assert not any(tmp_path.iterdir())  # no run folder: refused before any work


@pytest.mark.slow
def test_discrete_digits_are_scored_in_bits_per_dimension_by_every_estimator(tiny_recipe, capsys):
    tiny_unet = ["denoiser.name=unet", "denoiser.channels=16", "denoiser.channel_mult=[1]", "denoiser.groups=8"]
    steps = ["train.steps=2", "train.batch_size=16", "train.val_every=0", "train.warmup_steps=1"]
    steps.append("schedule.num_steps=100")  # the bound: 100 evaluations per item
    argv = ["run", str(tiny_recipe), "dataset.name=digits", *tiny_unet, *steps, "eval.num_samples=4", "run.threads=1"]
    assert cli.main([*argv, "eval.sample_batch=4", "sampler.steps=2", "denoiser.attention_resolutions=[]"]) == 0
    (run_dir,) = (tiny_recipe.parent / "runs").iterdir()
    argv = ["likelihood", str(run_dir), "--estimator", "vlb,elbo,ode", "--items", "8", "--rtol", "1e-3"]
    assert cli.main([*argv, "--atol", "1e-3", "run.threads=1"]) == 0
    (folder,) = [f for f in (run_dir / "likelihood").iterdir() if f.is_dir()]
    records = json.loads((folder / "likelihood.json").read_text())["likelihood"]
    assert set(records) == {"vlb", "elbo", "ode"}
    for record in records.values():
        assert record["unit"] == "bits/dim" and record["bound"] and record["items"] == 8
        assert 0 < record["nll"] < 64  # a probability's -log2 is positive; 8 bits/dim is uniform over 256 values
    assert records["ode"]["dequantized"] and records["ode"]["divergence"] == "hutchinson"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_likelihood_on_a_gpu_matches_the_cpus(tiny_recipe):
    """The network on CUDA, the solver's state on the CPU: the same items and noise give the same figures."""
    assert cli.main(["run", str(tiny_recipe), "run.threads=1"]) == 0
    (run_dir,) = (tiny_recipe.parent / "runs").iterdir()
    for device in ("cpu", "cuda"):
        argv = ["likelihood", str(run_dir), "--estimator", "elbo,ode", "--items", "64", f"run.device={device}"]
        assert cli.main(argv) == 0
    records = [
        json.loads((folder / "likelihood.json").read_text())["likelihood"]
        for folder in sorted((run_dir / "likelihood").iterdir(), key=lambda f: f.stat().st_mtime)
    ]
    for name in ("elbo", "ode"):
        assert records[1][name]["nll"] == pytest.approx(records[0][name]["nll"], rel=1e-3, abs=1e-3)
