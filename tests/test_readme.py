"""README honesty: its plugin example works as printed, and its commands are the ones CI runs."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import types
from pathlib import Path

import torch
from rich.console import Console

from sandbox import cli, protocols
from sandbox.engine.run import run_recipe
from sandbox.recipe import load_recipe
from sandbox.registry import load_registry
from sandbox.testing import check_denoiser, check_sampler, register_plugin

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def block_module(monkeypatch, index: int, name: str) -> types.ModuleType:
    """README's ``index``-th Python block, executed as module ``name``."""
    module = types.ModuleType(name)
    monkeypatch.setitem(sys.modules, name, module)
    exec(compile(python_blocks()[index], "README.md", "exec"), module.__dict__)
    return module


def paragraph(title: str) -> str:
    """README from a bold paragraph title to the next one (or the next heading)."""
    start = README.index(title)
    ends = [i for i in (README.find("\n\n**", start + 1), README.find("\n#", start + 1)) if i > 0]
    return README[start : min(ends)]


def test_readme_schedule_plugin_registers_trains_and_samples(monkeypatch, tiny_recipe):
    monkeypatch.setenv("SANDBOX_PLUGINS", "")  # the built-ins only: the example package may be installed too
    registry = load_registry({"readme-loglinear": block_module(monkeypatch, 0, "readme_loglinear")})
    component = registry.get("schedule", "loglinear")
    assert component.description == "Log-SNR linear in t."

    schedule = component.build()
    alpha, sigma = schedule.alpha_sigma(torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(alpha**2 + sigma**2, torch.ones(3))
    assert torch.allclose(schedule.log_snr(torch.tensor([0.0, 1.0])), torch.tensor([10.0, -10.0]), atol=1e-4)

    for sampler in registry.names("sampler"):
        recipe = load_recipe(
            tiny_recipe,
            [
                "schedule.name=loglinear",
                "schedule.lambda_min=-12",
                f"sampler.name={sampler}",
                "sampler.steps=8",
                "train.steps=10",
                "train.sample_every=0",
            ],
            registry=registry,
        )
        run = run_recipe(recipe, console=Console(record=True))
        samples = torch.load(run / "samples" / "final.pt")
        assert bool(torch.isfinite(samples).all())


def test_readme_commands_match_ci():
    ci = (ROOT / ".ci" / "run").read_text()
    setup_and_test = 'pip install -e ".[dev]" && python -m pytest -q'
    assert setup_and_test in README
    assert 'pip install -e ".[dev]" && sandbox run recipes/quickstart.yaml' in README
    assert 'python -m pip install -q -e ".[dev]" && python -m pytest -q' in ci
    assert (ROOT / "recipes" / "quickstart.yaml").exists()


def test_readme_sampler_conforms_and_runs(monkeypatch, tiny_recipe):
    module = block_module(monkeypatch, 1, "my_sampler")
    with register_plugin(module, "my-sampler") as registry:
        sampler = check_sampler("my_ancestral", registry=registry)
        assert sampler.nfe(registry.get("schedule", "cosine").build()) == 200
        assert (
            cli.main(
                [
                    "run",
                    str(tiny_recipe),
                    "sampler.name=my_ancestral",
                    "sampler.steps=8",
                    "train.steps=10",
                    "train.sample_every=0",
                ]
            )
            == 0
        )
        assert cli.main(["show", str(tiny_recipe), "sampler.name=my_ancestral", "sampler.steps=0"]) == 2


def test_readme_denoiser_conforms_and_trains_on_digits(monkeypatch, tmp_path):
    module = block_module(monkeypatch, 2, "my_denoiser")
    with register_plugin(module, "my-denoiser") as registry:
        check_denoiser("tiny_conv", (1, 8, 8), registry=registry)
        check_denoiser("tiny_conv", (3, 16, 16), module.TinyConvParams(width=7), registry=registry)
        assert (
            cli.main(
                [
                    "run",
                    str(ROOT / "recipes" / "quickstart.yaml"),
                    "denoiser.name=tiny_conv",
                    "train.steps=20",
                    "train.val_every=10",
                    "eval.num_samples=16",
                    "sampler.steps=5",
                    f"run.output={tmp_path}",
                ]
            )
            == 0
        )
        assert (
            cli.main(
                ["show", str(ROOT / "recipes" / "quickstart.yaml"), "dataset.name=toy2d", "denoiser.name=tiny_conv"]
            )
            == 0
        )  # the shape is refused when the run builds it
        assert (
            cli.main(
                [
                    "run",
                    str(ROOT / "recipes" / "quickstart.yaml"),
                    "dataset.name=toy2d",
                    "denoiser.name=tiny_conv",
                    f"run.output={tmp_path / 'refused'}",
                ]
            )
            == 2
        )
    (run,) = tmp_path.glob("quickstart-*")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["denoiser_parameters"] > 0 and summary["train"]["steps"] == 20


def test_readme_contract_tables_name_what_the_protocol_module_defines():
    """Every type and method README's contract tables name exists in sandbox.protocols, and the fields agree."""
    contract = paragraph("**The contract, stated once.**")
    named = set(re.findall(r"`(?:a |an )?([A-Z][A-Za-z]+)[`(]", contract))
    assert {"DataSplits", "Schedule", "DenoiserNetwork", "AnalyticDenoiser", "Sampler", "StepInfo", "Denoise"} <= named
    for name in named:
        assert hasattr(protocols, name), f"README names {name}, which sandbox.protocols does not define"
    fields = re.search(r"`DataSplits\((.*?)\)`", contract).group(1)
    listed = [part.split("=")[0].strip() for part in fields.split(",")]
    assert listed == [f.name for f in dataclasses.fields(protocols.DataSplits)]
    assert "`forward(x, c_noise)`" in contract and "`bind(data)`" in contract and "`nfe(schedule)`" in contract
    assert hasattr(protocols.DenoiserNetwork, "forward") and hasattr(protocols.AnalyticDenoiser, "bind")
    assert hasattr(protocols.Sampler, "nfe") and set(protocols.StepInfo.__annotations__) == {"x", "i", "t", "denoised"}
    schedule_table = paragraph("**One schedule protocol.**")
    methods = re.findall(r"^\| `(\w+)\(", schedule_table, flags=re.M)
    assert methods == ["alpha_sigma", "log_snr", "t_from_log_snr", "timesteps", "sample_t", "c_noise"]
    for method in methods:
        assert callable(getattr(protocols.Schedule, method)), method
