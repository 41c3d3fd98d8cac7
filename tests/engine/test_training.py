"""The training loop's parts: the loss, EMA, warm-up, validation and that training learns."""

from __future__ import annotations

import math

import pytest
import torch

from sandbox.engine.ema import EMA
from sandbox.engine.loss import DiffusionLoss
from sandbox.engine.precond import Preconditioned
from sandbox.engine.validation import validation_loss
from sandbox.registry import get_registry


def test_ema_follows_the_closed_form_with_warmup():
    net = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(net.weight)
    ema = EMA(net, decay=0.9)
    value = 0.0
    for n in range(1, 30):
        with torch.no_grad():
            net.weight.fill_(float(n))
        ema.update(net)
        d = min(0.9, (1 + n) / (10 + n))
        value = d * value + (1 - d) * n
    assert float(ema.model.weight) == pytest.approx(value, rel=1e-5)
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_loss_is_the_mse_of_the_epsilon_target():
    schedule = get_registry().get("schedule", "linear").build()

    class Oracle(torch.nn.Module):
        """Returns exactly the noise that was added (known from the generator's draws)."""

        def forward(self, x, c_noise):
            return self.eps

    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(16, 2)
    t = schedule.sample_t(16, g)
    eps = torch.randn(x0.shape, generator=g)
    oracle = Oracle()
    oracle.eps = eps
    denoiser = Preconditioned(oracle, schedule, "epsilon")
    loss = DiffusionLoss()(denoiser, x0, torch.Generator().manual_seed(3))
    assert float(loss.max()) < 1e-10
    oracle.eps = torch.zeros_like(eps)
    loss = DiffusionLoss()(denoiser, x0, torch.Generator().manual_seed(3))
    assert torch.allclose(loss, eps.pow(2).mean(1), atol=1e-6)
    assert t.shape == (16,)


def test_validation_loss_uses_the_same_draws_each_time():
    schedule = get_registry().get("schedule", "cosine").build()
    zero = Preconditioned(_Wrap(lambda x, c: torch.zeros_like(x)), schedule, "epsilon")
    data = torch.utils.data.DataLoader(torch.randn(40, 2), batch_size=16)
    loss_fn = DiffusionLoss()
    values = [validation_loss(zero, loss_fn, data, torch.device("cpu"), 0, seed=1) for _ in range(2)]
    assert values[0] == values[1]
    assert math.isclose(values[0], 1.0, rel_tol=0.35)  # E||eps||^2 / d = 1 for a zero predictor
    other_seed = validation_loss(zero, loss_fn, data, torch.device("cpu"), 0, seed=2)
    assert other_seed != values[0]


class _Wrap(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, c):
        return self.fn(x, c)


def test_training_reduces_validation_loss_on_toy_data(tiny_recipe):
    import json

    from rich.console import Console

    from sandbox.engine.run import run_recipe
    from sandbox.recipe import load_recipe

    run = run_recipe(
        load_recipe(
            tiny_recipe,
            ["train.steps=200", "train.val_every=20", "train.lr=3e-3", "train.sample_every=0", "eval.num_samples=16"],
        ),
        console=Console(record=True),
    )
    vals = [
        r["val_loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "val_loss" in r
    ]
    assert vals[-1] < 0.8 * vals[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_run(tiny_recipe):
    from rich.console import Console

    from sandbox.engine.run import run_recipe
    from sandbox.recipe import load_recipe

    run = run_recipe(
        load_recipe(tiny_recipe, ["run.device=cuda", "run.precision=bf16", "train.sample_every=0"]),
        console=Console(record=True),
    )
    assert bool(torch.isfinite(torch.load(run / "samples" / "final.pt")).all())
