"""The fast UNet computes what DDPM's UNet computes: a frozen, plainly written copy of the math is the reference.

:func:`reference_unet` is the DDPM UNet of Ho et al. (2020) written as
functional calls on a state dict, in channels-first layout, with the
attention as an explicit ``softmax(q k^T / sqrt(d)) v``. It reads parameters
by their state-dict names only, so it also pins the names and shapes a
diffusers exporter maps.
"""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
import torch.nn.functional as F
from sandbox_plugins.denoisers.layers import GROUPNORM_EPS, explicit_attention, timestep_embedding
from sandbox_plugins.denoisers.params import ResNetParams, UNetParams

from sandbox.registry import get_registry


def build(name, shape, params):
    return get_registry().get("denoiser", name).build(params, shape)


# --- the frozen reference ---------------------------------------------------------------------


def _norm(sd, prefix, x, groups):
    return F.group_norm(x, groups, sd[prefix + ".weight"], sd[prefix + ".bias"], GROUPNORM_EPS)


def _conv(sd, prefix, x, stride=1):
    w = sd[prefix + ".weight"]
    return F.conv2d(x, w, sd[prefix + ".bias"], stride=stride, padding=w.shape[-1] // 2)


def _linear(sd, prefix, x):
    return F.linear(x, sd[prefix + ".weight"], sd[prefix + ".bias"])


def _resblock(sd, prefix, x, temb, groups):
    h = _conv(sd, prefix + ".conv1", F.silu(_norm(sd, prefix + ".norm1", x, groups)))
    h = h + _linear(sd, prefix + ".temb_proj", F.silu(temb))[:, :, None, None]
    h = _conv(sd, prefix + ".conv2", F.silu(_norm(sd, prefix + ".norm2", h, groups)))  # dropout off (eval)
    shortcut = _conv(sd, prefix + ".shortcut", x) if prefix + ".shortcut.weight" in sd else x
    return shortcut + h


def _attention(sd, prefix, x, heads, groups):
    B, C, H, W = x.shape
    d = C // heads
    qkv = _conv(sd, prefix + ".qkv", _norm(sd, prefix + ".norm", x, groups))
    q, k, v = (t.reshape(B, heads, d, H * W) for t in qkv.chunk(3, dim=1))
    weights = torch.softmax(torch.einsum("bhdi,bhdj->bhij", q, k) / math.sqrt(d), dim=-1)
    h = torch.einsum("bhij,bhdj->bhdi", weights, v).reshape(B, C, H, W)
    return x + _conv(sd, prefix + ".proj_out", h)


def _stage(sd, prefix, x, temb, p):
    h = _resblock(sd, prefix + ".block", x, temb, p.groups)
    if prefix + ".attention.qkv.weight" in sd:
        h = _attention(sd, prefix + ".attention", h, p.num_heads, p.groups)
    return h


def _embed(sd, c_noise, ch):
    e = timestep_embedding(c_noise, ch)
    return _linear(sd, "embed.mlp.2", F.silu(_linear(sd, "embed.mlp.0", e)))


def reference_unet(sd, p: UNetParams, x, c_noise):
    """DDPM's UNet (``diffusion_tf/models/unet.py``) on the state dict ``sd``, in evaluation mode."""
    temb = _embed(sd, c_noise, p.channels)
    hs = [_conv(sd, "conv_in", x)]
    n_down = p.num_res_blocks * len(p.channel_mult) + len(p.channel_mult) - 1
    for i in range(n_down):
        prefix = f"down.{i}"
        if prefix + ".conv.weight" in sd:
            hs.append(_conv(sd, prefix + ".conv", hs[-1], stride=2))
        else:
            hs.append(_stage(sd, prefix, hs[-1], temb, p))
    h = _stage(sd, "mid.0", hs[-1], temb, p)
    h = _stage(sd, "mid.1", h, temb, p)
    n_up = (p.num_res_blocks + 1) * len(p.channel_mult) + len(p.channel_mult) - 1
    for i in range(n_up):
        prefix = f"up.{i}"
        if prefix + ".conv.weight" in sd:
            h = _conv(sd, prefix + ".conv", F.interpolate(h, scale_factor=2.0, mode="nearest"))
        else:
            h = _stage(sd, prefix, torch.cat([h, hs.pop()], dim=1), temb, p)
    assert not hs
    return _conv(sd, "out.conv", F.silu(_norm(sd, "out.norm", h, p.groups)))


def reference_resnet(sd, p: ResNetParams, x, c_noise):
    temb = _embed(sd, c_noise, p.channels)
    h = _conv(sd, "conv_in", x)
    for i in range(p.num_blocks):
        h = _stage(sd, f"blocks.{i}", h, temb, p)
    return _conv(sd, "out.conv", F.silu(_norm(sd, "out.norm", h, p.groups)))


def _randomise(net):
    """Random weights everywhere: the zero-initialised output convs would hide most of the network."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in net.parameters():
            param.copy_(torch.randn(param.shape, generator=g) * 0.2)
    return net


# --- the tests ----------------------------------------------------------------------------------

UNETS = {
    "ddpm-layout-ch32": ((3, 32, 32), UNetParams(channels=32)),  # DDPM's levels, attention and dropout, narrower
    "heads4-attn8": (
        (3, 16, 16),
        UNetParams(channels=32, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[8, 16], num_heads=4),
    ),
    "non-square": (
        (2, 8, 12),
        UNetParams(channels=16, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[4], groups=8),
    ),
}


def test_ddpm_parameter_count_and_names():
    """The DDPM configuration keeps its 35,746,307 parameters under the names exporters map."""
    net = build("unet", (3, 32, 32), UNetParams())
    sd = net.state_dict()
    assert sum(v.numel() for v in sd.values()) == 35_746_307
    assert sd["down.4.attention.qkv.weight"].shape == (3 * 256, 256, 1, 1)
    assert sd["mid.0.block.temb_proj.weight"].shape == (256, 512)
    assert sd["up.0.block.shortcut.weight"].shape == (256, 512, 1, 1)
    assert sd["embed.mlp.0.weight"].shape == (512, 128)
    assert len(sd) == 304
    names_and_shapes = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sd.items())  # frozen from the original UNet
    assert hashlib.sha256(names_and_shapes.encode()).hexdigest() == (
        "eb4e42337d28eefdbb94d1bb57a45834e27fa83ee23c1936491d5512e1ee830d"
    )


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("config", list(UNETS))
def test_unet_matches_the_reference(config, memory_format):
    shape, p = UNETS[config]
    torch.manual_seed(0)
    net = _randomise(build("unet", shape, p)).eval()
    sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
    x = torch.randn(2, *shape)
    c_noise = torch.tensor([3.0, 871.5])
    with torch.no_grad():
        expected = reference_unet(sd, p, x, c_noise)
        got = net.to(memory_format=memory_format)(x.contiguous(memory_format=memory_format), c_noise)
    scale = expected.abs().max()
    assert scale > 1.0  # the random weights reach the output
    torch.testing.assert_close(got, expected, atol=1e-4 * scale, rtol=1e-3)  # fp32 rounding, summed over ~30 layers


def test_resnet_matches_the_reference():
    p = ResNetParams(channels=32, num_blocks=3, attention=True, num_heads=2, groups=8)
    net = _randomise(build("resnet", (1, 8, 8), p)).eval()
    sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
    x, c_noise = torch.randn(2, 1, 8, 8), torch.tensor([0.5, 400.0])
    with torch.no_grad():
        expected = reference_resnet(sd, p, x, c_noise)
        got = net(x, c_noise)
    torch.testing.assert_close(got, expected, atol=1e-5 * expected.abs().max(), rtol=1e-4)


@pytest.mark.parametrize(
    "config,tolerance",
    [("heads4-attn8", 1e-5), ("ddpm-layout-ch32", 1e-4)],  # fp32 rounding in the deeper one: 2.4e-5, either way
)
def test_unet_gradients_match_the_reference(config, tolerance):
    """Backward through the fast layout gives the reference's input gradient: with gradients the attention
    is explicit (at most ``EXPLICIT_TOKENS`` tokens) and GroupNorm at 32x32 takes its closed-form backward."""
    shape, p = UNETS[config]
    net = _randomise(build("unet", shape, p)).eval()
    sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
    x = torch.randn(2, *shape)
    c_noise = torch.tensor([10.0, 500.0])
    x_ref, x_net = x.clone().requires_grad_(), x.clone().contiguous(memory_format=torch.channels_last)
    x_net.requires_grad_()
    reference_unet(sd, p, x_ref, c_noise).square().mean().backward()
    net.to(memory_format=torch.channels_last)(x_net, c_noise).square().mean().backward()
    torch.testing.assert_close(x_net.grad, x_ref.grad, atol=tolerance * x_ref.grad.abs().max(), rtol=1e-3)


def test_explicit_attention_is_scaled_dot_product_attention():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 50, 16, generator=g, dtype=torch.float64) for _ in range(3))
    expected = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(explicit_attention(q, k, v), expected, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5])
def test_training_dropout_keeps_each_value_with_probability_1_minus_p(p):
    """Dropout in training mode zeroes a fraction p of the values and scales the rest by 1 / (1 - p)."""
    shape = (3, 16, 16)
    params = UNetParams(channels=16, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[8], groups=8)
    block = build("unet", shape, params.__class__(**{**params.__dict__, "dropout": p})).down[0].block.dropout
    block.train()
    x = torch.ones(64, 32, 16, 16)
    y = block(x)
    kept = y != 0
    assert kept.float().mean().item() == pytest.approx(1 - p, abs=0.01)
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    assert torch.equal(block.eval()(x), x)
