"""Class-conditional built-ins: ``build(params, shape, num_classes=K)``, ``forward(x, c_noise, class_labels)``.

The contract is :class:`sandbox.protocols.DenoiserNetwork`'s: a table of ``K + 1`` rows (row ``K`` the null
class) added to the noise-level embedding; ``num_classes = 0`` is the unconditional network, unchanged.
"""

from __future__ import annotations

import pytest
import torch
from sandbox_plugins.denoisers.diffusers_export import to_diffusers
from sandbox_plugins.denoisers.params import MLPParams, ResNetParams, UNetParams

from sandbox.protocols import null_label
from sandbox.registry import get_registry

K = 10
SMALL = {
    "unet": (
        UNetParams(channels=16, channel_mult=[1, 2], attention_resolutions=[4], groups=8, num_res_blocks=1),
        (1, 8, 8),
    ),
    "resnet": (ResNetParams(channels=16, num_blocks=2, groups=8, attention=True, num_heads=1), (1, 8, 8)),
    "mlp": (MLPParams(hidden=32, layers=2), (2,)),
}
TEMB_DIM = {"unet": 64, "resnet": 64, "mlp": 32}
NAMES = list(SMALL)

# The unconditional networks of SMALL as they were before class conditioning (commit df9eb97), built after
# torch.manual_seed(0): number of state_dict entries, sum and sum of squares of all their values, then the sum
# and absolute sum of the outputs on a fixed batch once every weight is perturbed (see `pinned`).
BEFORE = {
    "unet": (128, 654.3341979144344, 1828.457071962074, 9.00388695593574, 17.469162252586102),
    "resnet": (36, 118.69536479016278, 319.4773038249393, 3.1843373926822096, 24.389137532794848),
    "mlp": (26, 103.38164846674408, 290.34195817772166, 0.016716698184609413, 0.23147924803197384),
}


def build(name: str, seed: int = 0, **kwargs):
    params, shape = SMALL[name]
    torch.manual_seed(seed)
    return get_registry().get("denoiser", name).build(params, shape, **kwargs).eval()


def perturb(net: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Every weight made non-zero: DDPM zero-initialises each block's last layer and the output layer, so an
    untrained network's output depends on nothing."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for weight in net.parameters():
            weight.add_(0.02 * torch.randn(weight.shape, generator=gen))
    return net


def batch(name: str, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(n, *SMALL[name][1], generator=gen)
    return x, torch.linspace(1.0, 900.0, n)


# --- unconditional: unchanged -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_unconditional_network_is_bit_identical_to_one_built_without_num_classes(name):
    omitted, zero = build(name), build(name, num_classes=0)
    a, b = omitted.state_dict(), zero.state_dict()
    assert list(a) == list(b) and not any("class_embed" in key for key in a)
    assert all(torch.equal(a[key], b[key]) for key in a)
    x, c = batch(name)
    with torch.no_grad():
        assert torch.equal(perturb(omitted)(x, c), perturb(zero)(x, c))


@pytest.mark.parametrize("name", NAMES)
def test_unconditional_network_has_the_weights_and_outputs_it_had_before_classes(name):
    net = build(name, num_classes=0)
    values = [v.double() for v in net.state_dict().values()]
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for weight in net.parameters():  # the draw order of tests/tools/test_export.py's perturbed_unet
            weight.add_(0.02 * torch.randn_like(weight))
        x = torch.randn(3, *SMALL[name][1], generator=gen)
        out = net(x, torch.tensor([1.0, 10.0, 500.0])).double()
    pinned = (len(values), sum(float(v.sum()) for v in values), sum(float((v**2).sum()) for v in values))
    assert pinned[0] == BEFORE[name][0]
    assert pinned[1:] == pytest.approx(BEFORE[name][1:3], rel=1e-9)
    assert (float(out.sum()), float(out.abs().sum())) == pytest.approx(BEFORE[name][3:], rel=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_class_table_comes_last_so_every_other_weight_is_the_unconditional_one(name):
    plain, conditional = build(name).state_dict(), build(name, num_classes=K).state_dict()
    assert list(conditional) == [*plain, "class_embed.weight"]
    assert all(torch.equal(plain[key], conditional[key]) for key in plain)


@pytest.mark.parametrize("name", NAMES)
def test_unconditional_network_refuses_class_labels(name):
    net = build(name)
    x, c = batch(name)
    with pytest.raises(ValueError, match="unconditional network"):
        net(x, c, torch.zeros(len(x), dtype=torch.int64))


# --- conditional -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_class_table_has_a_row_per_class_and_the_null_class(name):
    table = build(name, num_classes=K).class_embed
    assert isinstance(table, torch.nn.Embedding)
    assert tuple(table.weight.shape) == (K + 1, TEMB_DIM[name]) and null_label(K) == K


@pytest.mark.parametrize("name", NAMES)
def test_output_depends_on_each_items_own_class_only(name):
    net = perturb(build(name, num_classes=K))
    x, c = batch(name)
    labels = torch.tensor([0, 3, 7, K])
    with torch.no_grad():
        out = net(x, c, labels)
        assert out.shape == x.shape and torch.isfinite(out).all()
        assert torch.equal(net(x, c, labels), out)  # deterministic in eval mode
        # every item's output changes with its class ...
        other = net(x, c, torch.tensor([1, 4, 8, 2]))
        assert all((out[i] - other[i]).abs().max() > 1e-4 for i in range(len(x)))
        # ... and with nothing else: changing item 0's class leaves the other items as they were
        changed = net(x, c, torch.tensor([5, 3, 7, K]))
        assert (changed[0] - out[0]).abs().max() > 1e-4
        assert (changed[1:] - out[1:]).abs().max() <= 1e-6


@pytest.mark.parametrize("name", NAMES)
def test_no_labels_on_a_conditional_network_is_the_null_class(name):
    net = perturb(build(name, num_classes=K))
    x, c = batch(name)
    with torch.no_grad():
        null = net(x, c, torch.full((len(x),), K, dtype=torch.int64))
        assert torch.equal(net(x, c), null)
        assert torch.equal(net(x, c, torch.tensor(K)), null)  # one label for the whole batch
        assert (net(x, c, torch.zeros(len(x), dtype=torch.int64)) - null).abs().max() > 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_the_rows_of_the_classes_used(name):
    net = perturb(build(name, num_classes=K)).train()
    x, c = batch(name)
    net(x, c, torch.tensor([0, 3, 3, K])).square().mean().backward()
    grad = net.class_embed.weight.grad
    assert grad is not None
    used = torch.zeros(K + 1, dtype=torch.bool)
    used[[0, 3, K]] = True
    assert (grad[used].abs().sum(dim=1) > 0).all() and (grad[~used] == 0).all()


@pytest.mark.parametrize("num_classes", [-1, True, 2.0])
def test_num_classes_must_be_a_non_negative_int(num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        build("mlp", num_classes=num_classes)


def test_labels_must_be_integers_one_per_item():
    net = build("mlp", num_classes=K)
    x, c = batch("mlp")
    with pytest.raises(ValueError, match="integers"):
        net(x, c, torch.zeros(len(x)))
    with pytest.raises(ValueError, match="2 labels for a batch of 4"):
        net(x, c, torch.tensor([0, 1]))
    with pytest.raises(IndexError):  # one past the null class
        net(x, c, torch.full((len(x),), K + 1))


# --- diffusers export --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_diffusers_unet_with_a_class_table_gives_the_conditional_networks_output():
    diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e '.[diffusers]')")
    params, shape = SMALL["unet"]
    net = perturb(build("unet", num_classes=K))
    config, weights = to_diffusers(net.state_dict(), params, shape, time_shift=1.0)
    assert config["num_class_embeds"] == K + 1 and config["class_embed_type"] is None
    assert torch.equal(weights["class_embedding.weight"], net.state_dict()["class_embed.weight"])
    model = diffusers.UNet2DModel(**{k: v for k, v in config.items() if not k.startswith("_")}).eval()
    model.load_state_dict(weights, strict=True)
    k = torch.tensor([0, 10, 500, 999, 999])
    y = torch.tensor([0, 9, 3, K, 0])  # K: the null class
    x = torch.randn(len(k), *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = net(x, k.double() + 1, y)
        theirs = model(x, k, class_labels=y).sample
        assert (ours[3] - net(x, k.double() + 1, torch.zeros_like(y))[3]).abs().max() > 1e-3  # the class matters
    assert ours.abs().max() > 0.1
    assert (ours - theirs).abs().max() <= 1e-5


def test_unconditional_export_config_has_no_class_keys():
    params, shape = SMALL["unet"]
    config, weights = to_diffusers(build("unet").state_dict(), params, shape, time_shift=1.0)
    assert "num_class_embeds" not in config and not any(key.startswith("class_") for key in weights)


def test_export_refuses_a_class_table_of_the_wrong_width():
    params, shape = SMALL["unet"]
    state = build("unet", num_classes=K).state_dict()
    state["class_embed.weight"] = torch.zeros(K + 1, 7)
    with pytest.raises(ValueError, match=r"class_embed\.weight"):
        to_diffusers(state, params, shape, time_shift=1.0)
