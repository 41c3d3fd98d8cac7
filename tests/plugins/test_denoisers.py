"""Tests of the denoiser contract (every registered denoiser) and of the built-in networks."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from sandbox_plugins.denoisers.layers import timestep_embedding
from sandbox_plugins.denoisers.params import MLPParams, ResNetParams, UNetParams

from sandbox.errors import ParameterError
from sandbox.registry import get_registry

SHAPES = [(1, 8, 8), (3, 16, 16), (2,)]
BATCH = 2
DENOISERS = get_registry().names("denoiser")


def build(name, shape, params=None):
    comp = get_registry().get("denoiser", name)
    return comp.build(params if params is not None else comp.default_params(), shape)


def n_params(net):
    return sum(p.numel() for p in net.parameters())


def try_build(name, shape):
    """The denoiser with its default parameters, or None when they refuse ``shape`` with a ParameterError."""
    try:
        return build(name, shape)
    except ParameterError:
        return None


# --- the contract, over every registered denoiser ---------------------------------------------


def test_builtins_are_registered():
    assert {"unet", "resnet", "mlp"} <= set(DENOISERS)
    for name in DENOISERS:
        assert get_registry().get("denoiser", name).description


@pytest.mark.parametrize("name", DENOISERS)
def test_accepts_some_shape(name):
    ok = [shape for shape in SHAPES if try_build(name, shape) is not None]
    assert ok, f"denoiser '{name}' accepts none of {SHAPES} with its default parameters"


@pytest.mark.slow
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", DENOISERS)
def test_contract(name, shape):
    """Shape, finiteness, training on a fixed batch, gradients to every parameter, c_noise dependence."""
    torch.manual_seed(0)
    net = try_build(name, shape)
    if net is None:
        pytest.skip(f"'{name}' with default parameters refuses shape {shape}")
    if not isinstance(net, torch.nn.Module):
        pytest.skip(f"'{name}' is analytic: no network to train (tests/test_oracle.py covers it)")
    x = torch.randn(BATCH, *shape)
    c_noise = torch.tensor([50.0, 800.0])
    target = torch.randn(BATCH, *shape)

    out = net(x, c_noise)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()

    # Zero-initialised output layers (as in DDPM) pass no gradient on the first step,
    # so every parameter must receive one within a few steps.
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    reached = {n: False for n, _ in net.named_parameters()}
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = F.mse_loss(net(x, c_noise), target)
        loss.backward()
        for n, p in net.named_parameters():
            reached[n] |= p.grad is not None and bool(p.grad.abs().sum() > 0)
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], f"loss did not decrease: {losses}"
    assert all(reached.values()), f"no gradient reached {[n for n, r in reached.items() if not r]}"

    net.eval()  # no dropout: the output must change because c_noise did
    with torch.no_grad():
        a, b = net(x, c_noise), net(x, c_noise + 250.0)
    assert torch.isfinite(a).all() and a.shape == x.shape
    assert not torch.allclose(a, b), "output does not depend on c_noise"


@pytest.mark.parametrize("name", DENOISERS)
def test_rejects_shapes_with_parameter_error(name):
    """Every shape is built or refused with a ParameterError on a field (never an assertion or a torch error)."""
    params = get_registry().get("denoiser", name).params
    fields = {"name"} | {f.name for f in dataclasses.fields(params)} if params is not None else {"name"}
    for shape in SHAPES + [(3, 12, 12), (4,), (2, 3, 6, 6)]:
        try:
            build(name, shape)
        except ParameterError as exc:
            assert exc.key in fields, exc


# --- the DDPM UNet --------------------------------------------------------------------------


def test_unet_defaults_are_ddpm_cifar10():
    """35,746,307 parameters: the 35.7M of Ho et al. (2020), table 3, and of diffusers' google/ddpm-cifar10-32."""
    net = build("unet", (3, 32, 32), UNetParams())
    assert n_params(net) == 35_746_307


def _count_sdpa(monkeypatch, net, shape):
    lengths = []
    real = F.scaled_dot_product_attention

    def counting(q, k, v, *args, **kwargs):
        lengths.append(q.shape[-2])
        return real(q, k, v, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting)
    with torch.no_grad():
        net(torch.randn(1, *shape), torch.tensor([10.0]))
    return sorted(lengths)


@pytest.mark.parametrize(
    "attention_resolutions, expected",
    [
        ([8], [64] * 4),  # 1 down + 1 middle + 2 up blocks at 8x8
        ([16], [64] + [256] * 3),  # middle at 8x8; 1 down + 2 up at 16x16
        ([], [64]),  # the middle always attends
    ],
)
def test_unet_attention_uses_sdpa_at_chosen_resolutions(monkeypatch, attention_resolutions, expected):
    p = UNetParams(
        channels=16, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=attention_resolutions, groups=8
    )
    net = build("unet", (3, 16, 16), p)
    assert _count_sdpa(monkeypatch, net, (3, 16, 16)) == expected


def test_unet_heads(monkeypatch):
    p = UNetParams(
        channels=16, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[8], num_heads=4, groups=8
    )
    heads = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(
        torch.nn.functional, "scaled_dot_product_attention", lambda q, k, v: heads.append(q.shape[1]) or real(q, k, v)
    )
    with torch.no_grad():  # sampling: the fused kernel (training on the CPU computes the attention explicitly)
        build("unet", (3, 16, 16), p)(torch.randn(1, 3, 16, 16), torch.tensor([1.0]))
    assert heads == [4] * 4


def test_resnet_attention_uses_sdpa(monkeypatch):
    net = build("resnet", (1, 8, 8), ResNetParams(channels=16, num_blocks=4, attention=True, groups=8))
    assert _count_sdpa(monkeypatch, net, (1, 8, 8)) == [64]
    net = build("resnet", (1, 8, 8), ResNetParams(channels=16, num_blocks=4, groups=8))
    assert _count_sdpa(monkeypatch, net, (1, 8, 8)) == []


def test_unet_non_square():
    p = UNetParams(channels=16, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[4], groups=8)
    net = build("unet", (2, 8, 12), p)
    assert net(torch.randn(2, 2, 8, 12), torch.tensor([1.0, 2.0])).shape == (2, 2, 8, 12)


SMALL_UNET = {"channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1, "groups": 8}


@pytest.mark.parametrize(
    "name, shape, params, key, words",
    [
        ("unet", (2,), UNetParams(), "name", "(C, H, W)"),
        ("resnet", (2,), ResNetParams(), "name", "mlp"),
        ("mlp", (), MLPParams(), "name", "non-empty shape"),
        ("unet", (3, 8, 8), UNetParams(channel_mult=[1, 2, 2, 2, 2]), "channel_mult", "divisible by 16"),
        ("unet", (3, 12, 12), UNetParams(), "channel_mult", "at most 3 entries for 12x12 images"),
        ("unet", (3, 8, 8), UNetParams(), "attention_resolutions", "[8, 4, 2, 1]"),
        (
            "unet",
            (3, 16, 16),
            UNetParams(**SMALL_UNET, attention_resolutions=[16], num_heads=32),
            "num_heads",
            "16 channels of the attention at height 16",
        ),
    ],
)
def test_shape_dependent_checks_raise_parameter_error_at_build(name, shape, params, key, words):
    """What needs the item shape is checked at build time, naming the bare field (the engine adds the section)."""
    with pytest.raises(ParameterError) as info:
        build(name, shape, params)
    assert info.value.key == key
    assert words in str(info.value)


@pytest.mark.parametrize(
    "cls, overrides, key, words",
    [
        (UNetParams, {"channels": 48}, "groups", "divisor of channels (48)"),
        (UNetParams, {"num_heads": 3}, "num_heads", "256 channels of the middle attention"),
        (UNetParams, {"channel_mult": []}, "channel_mult", "non-empty"),
        (UNetParams, {"channel_mult": [1, 0]}, "channel_mult", "integers >= 1"),
        (UNetParams, {"attention_resolutions": [0]}, "attention_resolutions", ">= 1"),
        (UNetParams, {"dropout": 1.5}, "dropout", "[0, 1)"),
        (UNetParams, {"dropout": float("nan")}, "dropout", "finite"),
        (ResNetParams, {"channels": 40}, "groups", "divisor of channels (40)"),
        (ResNetParams, {"num_blocks": 0}, "num_blocks", ">= 1"),
        (ResNetParams, {"attention": True, "num_heads": 5}, "num_heads", "divisor of channels (64)"),
        (MLPParams, {"hidden": 0}, "hidden", ">= 1"),
        (MLPParams, {"layers": 0}, "layers", ">= 1"),
    ],
)
def test_params_check_their_own_ranges(cls, overrides, key, words):
    with pytest.raises(ParameterError) as info:
        cls(**overrides)
    assert info.value.key == key
    assert words in str(info.value)


def test_num_heads_only_needs_to_divide_the_attending_levels():
    """32 heads do not divide level 0's 16 channels, but only level 1 (32 channels) and the middle attend."""
    net = build("unet", (3, 16, 16), UNetParams(**SMALL_UNET, attention_resolutions=[8], num_heads=32))
    assert net(torch.randn(1, 3, 16, 16), torch.tensor([1.0])).shape == (1, 3, 16, 16)


# --- building blocks ------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [4, 128, 7])
def test_timestep_embedding_closed_form(dim):
    """``get_timestep_embedding`` of Ho et al. (2020): [sin(t w_i), cos(t w_i)], w_i = 10000^(-i / (half - 1))."""
    t = torch.tensor([0.0, 1.0, 17.5, 999.0])
    emb = timestep_embedding(t, dim)
    half = dim // 2
    assert emb.shape == (4, dim)
    for b, tb in enumerate(t.tolist()):
        for i in range(half):
            w = math.exp(-math.log(10000.0) * i / (half - 1))
            assert emb[b, i].item() == pytest.approx(math.sin(tb * w), abs=1e-4)
            assert emb[b, half + i].item() == pytest.approx(math.cos(tb * w), abs=1e-4)
    if dim % 2:
        assert (emb[:, -1] == 0).all()


def test_mlp_flattens_any_shape():
    net = build("mlp", (2, 3, 4), MLPParams(hidden=32, layers=2))
    x = torch.randn(5, 2, 3, 4)
    assert net(x, torch.rand(5) * 1000).shape == x.shape


def test_scalar_c_noise_broadcasts():
    net = build("mlp", (2,), MLPParams(hidden=16, layers=1))
    assert net(torch.randn(3, 2), torch.tensor(5.0)).shape == (3, 2)


def test_plugin_module_does_not_import_torch():
    code = "import sys, sandbox_plugins.denoisers; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
