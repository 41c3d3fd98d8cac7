"""Sampler throughput: samples per second and per network evaluation, on a small UNet.

Configuration: UNet channels 32, channel_mult [1, 2], 1 residual block per level,
attention at 4x4, on 1x8x8 digits-shaped data; 64 samples per call; cosine schedule.
Every sampler takes 50 steps, so samples/s compares the cost of their steps.

    pytest benchmarks/test_bench_samplers.py --benchmark-only
"""

from __future__ import annotations

import pytest
import torch

from sandbox.engine.precond import Preconditioned
from sandbox.registry import get_registry
from sandbox.sampling import CountingDenoise

REGISTRY = get_registry()
STEPS = 50
BATCH = 64


@pytest.fixture(scope="module")
def denoiser():
    torch.manual_seed(0)
    unet = REGISTRY.get("denoiser", "unet")
    params = unet.default_params()
    params.channels, params.channel_mult, params.num_res_blocks = 32, [1, 2], 1
    params.attention_resolutions, params.groups, params.dropout = [4], 8, 0.0
    net = unet.build(params, (1, 8, 8)).eval()
    schedule = REGISTRY.get("schedule", "cosine").build()
    return Preconditioned(net, schedule, "epsilon"), schedule


@pytest.mark.parametrize("name", REGISTRY.names("sampler"))
def test_sampler_throughput(benchmark, denoiser, name):
    model, schedule = denoiser
    component = REGISTRY.get("sampler", name)
    params = component.default_params()
    params.steps = STEPS
    sampler = component.build(params)
    noise = torch.randn(BATCH, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    counter = CountingDenoise(model)

    def run():
        counter.nfe = 0
        return sampler(counter, noise, schedule, generator=torch.Generator().manual_seed(1))

    out = benchmark.pedantic(run, rounds=2, iterations=1, warmup_rounds=0)
    assert out.shape == noise.shape
    seconds = benchmark.stats.stats.mean
    benchmark.extra_info.update(
        nfe=counter.nfe, samples_per_s=BATCH / seconds, ms_per_nfe=1000 * seconds / counter.nfe
    )
