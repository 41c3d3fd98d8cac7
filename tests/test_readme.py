"""README honesty: its plugin example works as printed, and its commands are the ones CI runs."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import torch
from rich.console import Console

from sandbox.recipe import load_recipe
from sandbox.registry import load_registry
from sandbox.run import run_recipe

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_schedule_plugin_registers_trains_and_samples(monkeypatch, tiny_recipe):
    module = types.ModuleType("sandbox_loglinear")
    monkeypatch.setitem(sys.modules, "sandbox_loglinear", module)
    exec(compile(python_blocks()[0], "README.md", "exec"), module.__dict__)
    registry = load_registry({"sandbox-loglinear": module})
    component = registry.get("schedule", "loglinear")
    assert component.description == "Log-SNR linear in t."

    schedule = component.build()
    alpha, sigma = schedule.alpha_sigma(torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(alpha**2 + sigma**2, torch.ones(3))
    assert torch.allclose(schedule.log_snr(torch.tensor([0.0, 1.0])), torch.tensor([10.0, -10.0]), atol=1e-4)

    for sampler in registry.names("sampler"):
        recipe = load_recipe(tiny_recipe, ["schedule.name=loglinear", "schedule.lambda_min=-12",
                                           f"sampler.name={sampler}", "sampler.steps=8", "train.steps=10",
                                           "train.sample_every=0"], registry=registry)
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
