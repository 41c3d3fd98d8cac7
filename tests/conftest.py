"""Shared fixtures: a throwaway plugin, always unregistered, and tiny recipes.

The folders follow the floors of the code (``core``, ``plugins``, ``engine``,
``tools``, ``cli``) plus ``docs`` and ``e2e``; every test in ``e2e`` (whole
runs, real installs, several processes) is marked ``slow``, so
``python -m pytest -m "not slow"`` is the fast loop.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    """A recipe on the 2-D toy set that trains and samples in a few seconds."""
    path = tmp_path / "tiny.yaml"
    path.write_text(
        f"""
dataset: {{name: toy2d, shape: moons, n_train: 512, n_val: 128}}
schedule: {{name: linear, num_steps: 100}}
denoiser: {{name: mlp, hidden: 32, layers: 2}}
sampler: {{name: ddim, steps: 10}}
train: {{steps: 30, batch_size: 64, log_every: 10, val_every: 15, sample_every: 20, warmup_steps: 5}}
eval: {{val_batches: 2, num_samples: 64, sample_batch: 32, grid_samples: 16}}
run: {{device: cpu, seed: 0, output: {tmp_path / "runs"}}}
"""
    )
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Thousands of tiny ops: one thread is faster and immune to a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


E2E = Path(__file__).resolve().parent / "e2e"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if E2E in Path(item.path).parents:
            item.add_marker(pytest.mark.slow)
