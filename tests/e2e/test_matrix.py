"""Every registered schedule x prediction target x loss weighting trains, and every registered sampler samples from it.

Parametrised over the registry, so a schedule or sampler is covered the moment
it registers. Training is a few dozen AdamW steps of a small MLP on the 2-D
toy set; the check is that the weighted validation loss (fixed draws) falls
and that each sampler returns finite samples of the right shape with the NFE
it reports. (How close samples get to the data is the oracle's job, in
``test_oracle.py`` and ``sandbox doctor``: an undertrained network says
little about a sampler.)
"""

from __future__ import annotations

import pytest
import torch

from sandbox.engine.loss import DiffusionLoss
from sandbox.engine.precond import Preconditioned
from sandbox.protocols import first_tensor
from sandbox.recipe import load_recipe
from sandbox.registry import get_registry
from sandbox.sampling import CountingDenoise
from sandbox.targets import TARGETS, WEIGHTINGS, Target

REGISTRY = get_registry()
STEPS = 60


@pytest.fixture(scope="module")
def toy():
    component = REGISTRY.get("dataset", "toy2d")
    params = component.default_params()
    params.n_train, params.n_val = 1024, 256
    data = component.build(params)
    return tuple(torch.stack([first_tensor(split[i]) for i in range(len(split))]) for split in (data.train, data.val))


def small_mlp():
    component = REGISTRY.get("denoiser", "mlp")
    params = component.default_params()
    params.hidden, params.layers = 64, 2
    return component.build(params, (2,))


def trains_and_samples(schedule_name: str, target: str, toy) -> None:
    train, val = toy
    schedule = REGISTRY.get("schedule", schedule_name).build()
    for weighting in WEIGHTINGS:
        torch.manual_seed(0)
        net = small_mlp()
        denoiser = Preconditioned(net, schedule, target)
        loss_fn = DiffusionLoss(weighting)

        def val_loss(loss_fn=loss_fn, denoiser=denoiser):
            with torch.no_grad():
                return float(loss_fn(denoiser, val, torch.Generator().manual_seed(5)).mean())

        before = val_loss()
        opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
        batches = torch.Generator().manual_seed(1)
        for _ in range(STEPS):
            batch = train[torch.randint(len(train), (128,), generator=batches)]
            loss = loss_fn(denoiser, batch).mean()
            assert torch.isfinite(loss), (weighting, float(loss))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
        after = val_loss()
        assert after < before, f"{schedule_name} / {target} / {weighting}: validation loss {before:.4g} -> {after:.4g}"

    denoise = denoiser.eval()
    noise = torch.randn(256, 2, generator=torch.Generator().manual_seed(2))
    for sampler_name in REGISTRY.names("sampler"):
        component = REGISTRY.get("sampler", sampler_name)
        params = component.default_params()
        if params is not None and hasattr(params, "steps"):
            params.steps = 8
        sampler = component.build(params)
        counter = CountingDenoise(denoise)
        with torch.no_grad():
            out = sampler(counter, noise, schedule, generator=torch.Generator().manual_seed(3))
        assert out.shape == noise.shape, sampler_name
        assert bool(torch.isfinite(out).all()), f"{sampler_name} on {schedule_name} / {target}: non-finite samples"
        assert counter.nfe == sampler.nfe(schedule), sampler_name


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("schedule_name", REGISTRY.names("schedule"))
def test_every_schedule_and_target_trains_and_every_sampler_samples(schedule_name, target, toy, one_thread):
    trains_and_samples(schedule_name, target, toy)


def _flow(alpha, sigma, sigma_data):
    """Flow matching's velocity u = eps - x_0 (Lipman et al. 2023): x_0 = (x_t - sigma u) / (alpha + sigma)."""
    return 1.0 / (alpha + sigma), -sigma / (alpha + sigma), 1.0 / (alpha**2 + sigma**2).sqrt()


@pytest.mark.parametrize("schedule_name", ["cosine", "edm"])
def test_a_target_added_as_one_table_entry_trains_and_samples_with_every_sampler(
    schedule_name, toy, one_thread, monkeypatch
):
    monkeypatch.setitem(TARGETS, "flow", Target(_flow, description="u = eps - x0"))
    assert (
        load_recipe(
            None,
            [
                "dataset.name=toy2d",
                "schedule.name=cosine",
                "denoiser.name=mlp",
                "sampler.name=euler",
                "train.target=flow",
            ],
        ).train.target
        == "flow"
    )
    trains_and_samples(schedule_name, "flow", toy)
