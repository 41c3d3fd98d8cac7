"""Training throughput of the built-in denoisers: one step = forward + MSE backward + AdamW step.

Run with ``pytest benchmarks/test_bench_denoisers.py --benchmark-only``; each
test's ``extra_info`` holds ``steps_per_s`` and ``items_per_s``. The
configurations are small so the whole file takes seconds on a laptop CPU.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sandbox_plugins.denoisers.params import MLPParams, ResNetParams, UNetParams

from sandbox.registry import get_registry


def _train_step_benchmark(benchmark, name, params, shape, batch, rounds=5):
    torch.manual_seed(0)
    net = get_registry().get("denoiser", name).build(params, shape)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randn(batch, *shape)
    c_noise = torch.rand(batch) * 1000
    target = torch.randn(batch, *shape)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(net(x, c_noise), target)
        loss.backward()
        opt.step()
        return loss.item()

    loss = benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=1)
    assert torch.isfinite(torch.tensor(loss))
    mean = benchmark.stats.stats.mean
    benchmark.extra_info.update(
        denoiser=name,
        params=sum(p.numel() for p in net.parameters()),
        shape=list(shape),
        batch=batch,
        steps_per_s=1.0 / mean,
        items_per_s=batch / mean,
    )


@pytest.mark.benchmark(group="denoiser-train-step")
def test_unet_ch32_mult12_attn8_batch32_3x16x16(benchmark):
    """unet: channels 32, channel_mult [1, 2], num_res_blocks 2, attention at 8x8, dropout 0.1; batch 32 of 3x16x16."""
    params = UNetParams(channels=32, channel_mult=[1, 2], num_res_blocks=2, attention_resolutions=[8])
    _train_step_benchmark(benchmark, "unet", params, (3, 16, 16), batch=32, rounds=3)


@pytest.mark.benchmark(group="denoiser-train-step")
def test_resnet_ch32_blocks4_batch32_3x16x16(benchmark):
    """resnet: channels 32, num_blocks 4, no attention; batch 32 of 3x16x16."""
    params = ResNetParams(channels=32, num_blocks=4)
    _train_step_benchmark(benchmark, "resnet", params, (3, 16, 16), batch=32)


@pytest.mark.benchmark(group="denoiser-train-step")
def test_mlp_hidden128_layers3_batch256_2d(benchmark):
    """mlp: hidden 128, layers 3 (the defaults); batch 256 of 2-D points."""
    _train_step_benchmark(benchmark, "mlp", MLPParams(), (2,), batch=256, rounds=20)
