"""The example third-party plugin, installed for real: listed, run, sampled, and its own tests pass.

``examples/sandbox-loglinear`` is pip-installed once per module into a
temporary folder (``--no-deps --no-build-isolation --no-index``: offline, and
torch is not installed again); every check runs in a subprocess with that
folder first on ``PYTHONPATH``, as if the package were installed next to the
sandbox.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "sandbox-loglinear"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """Install a copy of the example (pip builds in the source folder) and return the environment to use it."""
    tmp = tmp_path_factory.mktemp("loglinear")
    source = tmp / "sandbox-loglinear"
    shutil.copytree(
        EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache")
    )
    site = tmp / "site"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--quiet",
            "--target",
            str(site),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("SANDBOX_PLUGINS", "SANDBOX_TRACE")}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")])),
        COLUMNS="200",
        PYTHONDONTWRITEBYTECODE="1",
        OMP_NUM_THREADS="2",
    )
    return {"env": env, "source": source, "tmp": tmp}


def python(installed: dict, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=installed["env"],
        cwd=cwd or installed["tmp"],
        timeout=300,
    )


def test_list_shows_the_schedule_with_its_distribution_without_importing_torch(installed):
    code = (
        "import sys; from sandbox import cli; rc = cli.main(['list']); "
        "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)"
    )
    result = python(installed, "-c", code)
    assert result.returncode == 0, result.stderr
    row = next((line for line in result.stdout.splitlines() if " loglinear " in line), "")
    assert "sandbox-loglinear 0.1.0" in row, result.stdout
    assert "failed" not in result.stderr


def test_plugins_shows_the_distribution_and_version(installed):
    result = python(installed, "-m", "sandbox.cli", "plugins")
    assert result.returncode == 0, result.stderr
    row = next((line for line in result.stdout.splitlines() if "sandbox-loglinear" in line), "")
    assert "0.1.0" in row and "schedule loglinear" in row, result.stdout


def test_run_with_the_schedule_writes_a_summary(installed):
    tmp = installed["tmp"]
    recipe = tmp / "loglinear.yaml"
    recipe.write_text(f"""
dataset: {{name: toy2d, shape: moons, n_train: 256, n_val: 64}}
schedule: {{name: loglinear, lambda_min: -12}}
denoiser: {{name: mlp, hidden: 32, layers: 2}}
sampler: {{name: ddim, steps: 8}}
train: {{steps: 20, batch_size: 64, log_every: 10, val_every: 0, sample_every: 0, warmup_steps: 5}}
eval: {{val_batches: 1, num_samples: 32, sample_batch: 32, grid_samples: 16}}
run: {{device: cpu, seed: 0, output: {tmp / "runs"}}}
""")
    result = python(installed, "-m", "sandbox.cli", "run", str(recipe))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (summary_path,) = (tmp / "runs").glob("*/summary.json")
    schedule = json.loads(summary_path.read_text())["components"]["schedule"]
    assert schedule["name"] == "loglinear" and schedule["provider"] == "sandbox-loglinear 0.1.0"
    assert schedule["params"] == {"lambda_max": 10.0, "lambda_min": -12.0}


SAMPLE_EVERY_SAMPLER = """
import json, torch
from sandbox.registry import get_registry
from sandbox.sampling import CountingDenoise

registry = get_registry()
schedule = registry.get("schedule", "loglinear").build()
mu, s = torch.tensor([1.0, -0.5]), 0.5

def denoise(x, t):  # exact E[x0 | x_t] for x0 ~ N(mu, s^2 I)
    alpha, sigma = (float(v) for v in schedule.alpha_sigma(torch.tensor([float(t)], dtype=torch.float64)))
    return mu + alpha * s**2 / (alpha**2 * s**2 + sigma**2) * (x - alpha * mu)

results = {}
for name in registry.names("sampler"):
    noise = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0))
    counter = CountingDenoise(denoise)
    out = registry.get("sampler", name).build()(counter, noise, schedule, generator=torch.Generator().manual_seed(1))
    results[name] = {"finite": bool(torch.isfinite(out).all()), "mean": out.mean(0).tolist(),
                     "std": out.std(0).tolist(), "nfe": counter.nfe}
print(json.dumps(results))
"""


def test_every_builtin_sampler_recovers_a_gaussian_on_the_schedule(installed):
    result = python(installed, "-c", SAMPLE_EVERY_SAMPLER)
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"ddim", "ddpm"} <= set(results)
    for name, r in results.items():
        assert r["finite"] and r["nfe"] > 0, name
        assert r["mean"] == pytest.approx([1.0, -0.5], abs=0.05), name
        assert r["std"] == pytest.approx([0.5, 0.5], abs=0.05), name


def test_the_example_packages_own_tests_pass(installed):
    source = installed["source"]
    result = python(installed, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(source / "tests"), cwd=source)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout
