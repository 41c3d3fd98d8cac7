"""The DDPM UNet as diffusers' ``UNet2DModel``, mapped exactly: a :class:`sandbox.protocols.DiffusersExport`.

Both are the network of Ho et al. (2020), ``diffusion_tf/models/unet.py``
(diffusers' ``google/ddpm-cifar10-32`` is that network), so every layer has
its counterpart; what differs is only how the weights are laid out:

=====================================  ============================================================================
sandbox (:mod:`.unet`, :mod:`.layers`)  diffusers ``UNet2DModel``
=====================================  ============================================================================
``embed``: sinusoids of width          ``time_proj`` (``Timesteps``, ``flip_sin_to_cos=False``, ``freq_shift=1``:
``channels``, ``omega_i =               the same ``[sin, cos]`` of the same frequencies) and ``time_embedding``
10000^(-i / (half - 1))``, MLP          (``linear_1``, ``linear_2``). The network reads ``c_noise = k + shift`` where
                                        diffusers passes the timestep ``k``: ``emb(k + shift)`` is a rotation of
                                        ``emb(k)`` by ``shift omega_i`` in each (sin, cos) pair, folded into
                                        ``linear_1``'s weight
``down``: ``num_res_blocks`` x          ``down_blocks[level]``: ``DownBlock2D``, or ``AttnDownBlock2D`` where the
(``ResBlock`` [+ ``AttentionBlock``]),  level's height is in ``attention_resolutions``; ``resnets[j]``
then ``Downsample``                     (``norm1, conv1, time_emb_proj, norm2, conv2, conv_shortcut``),
                                        ``attentions[j]``, ``downsamplers[0].conv``: a 3x3 stride-2 conv with
                                        symmetric padding 1 (``downsample_padding=1``; DDPM's TF code padded
                                        asymmetrically, which diffusers' ``downsample_padding=0`` reproduces)
attention: GroupNorm, fused 1x1        ``group_norm``; ``to_q, to_k, to_v``: the three C-row blocks of ``qkv``
``qkv`` conv (3C outputs: q, k, v),     as linear weights; ``to_out.0``: ``proj_out``; ``attention_head_dim`` is
``proj_out`` conv                       ``channels / num_heads`` (``None``: one head of the block's width)
``mid``: res - attention - res         ``mid_block.resnets[0], attentions[0], resnets[1]``
``up``: ``num_res_blocks + 1`` x        ``up_blocks[...]`` (``UpBlock2D`` / ``AttnUpBlock2D``), skips concatenated
(``ResBlock`` [+ attention]),           after the hidden state as in the sandbox, ``upsamplers[0].conv``
then ``Upsample``                       (nearest x2, 3x3 conv)
``out``: GroupNorm - SiLU - conv       ``conv_norm_out``, ``conv_out``
``class_embed`` (a conditional UNet:   ``class_embedding`` with ``num_class_embeds = K + 1`` (``class_embed_type``
``nn.Embedding(K + 1, 4 channels)``,    None): an ``nn.Embedding`` of the same shape whose row is added to the
row K the null class)                   output of ``time_embedding``, where the sandbox adds it
=====================================  ============================================================================

GroupNorm's eps (1e-6) is ``norm_eps``, ``groups`` is ``norm_num_groups``,
residual blocks use ``resnet_time_scale_shift="default"`` (the embedding is
added, not a scale and shift) and output scale 1. The number of classes of a
conditional UNet is read from its ``class_embed.weight``; diffusers then
requires ``class_labels`` on every call (``K`` for no condition).

What cannot be mapped, and stops the export with the key: ``channel_mult[0]``
other than 1 (diffusers' ``conv_in`` and time embedding have
``block_out_channels[0]`` channels, the sandbox's ``channels``), fewer than 4
``channels`` (two sinusoids: the sandbox divides by ``max(half - 1, 1)``,
diffusers by ``half - 1 = 0``), and several heads whose width differs
between attention levels (diffusers has one ``attention_head_dim``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from sandbox_plugins.denoisers import unet
from sandbox_plugins.denoisers.layers import GROUPNORM_EPS
from sandbox_plugins.denoisers.params import UNetParams

from sandbox.errors import ParameterError


def frequencies(dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """The float32 ``omega_i`` of :func:`sandbox_plugins.denoisers.layers.timestep_embedding`, as float64."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32) / max(half - 1, 1)
    return torch.exp(exponent).double()


def shift_time(weight: torch.Tensor, dim: int, shift: float) -> torch.Tensor:
    """``W'`` with ``W' emb(k) = W emb(k + shift)`` for the sinusoidal ``emb`` of width ``dim``.

    ``sin((k + s) w) = sin(k w) cos(s w) + cos(k w) sin(s w)`` and
    ``cos((k + s) w) = cos(k w) cos(s w) - sin(k w) sin(s w)``, so the columns
    of W acting on the sines and cosines mix by a rotation of angle ``s w``.
    """
    if shift == 0:
        return weight.clone()
    half = dim // 2
    angle = shift * frequencies(dim)
    cos, sin = torch.cos(angle), torch.sin(angle)
    w = weight.double()
    w_sin, w_cos = w[:, :half], w[:, half : 2 * half]
    out = w.clone()
    out[:, :half] = w_sin * cos - w_cos * sin
    out[:, half : 2 * half] = w_sin * sin + w_cos * cos
    return out.to(weight.dtype)


def _head_dim(p: UNetParams, widths: list[int]) -> int | None:
    """diffusers' one ``attention_head_dim`` for heads of ``widths / num_heads`` channels (None: one head)."""
    if p.num_heads == 1:
        return None
    dims = sorted({w // p.num_heads for w in widths})
    if len(dims) > 1:
        raise ParameterError(
            "num_heads",
            p.num_heads,
            f"1, or heads of one width at every attention block: diffusers' UNet2DModel has one "
            f"attention_head_dim, and {p.num_heads} heads of the attention widths {sorted(set(widths))} are "
            f"{dims} channels wide",
        )
    return dims[0]


def config(p: UNetParams, shape: Sequence[int], num_classes: int = 0) -> dict[str, Any]:
    """The ``UNet2DModel`` config of the sandbox's UNet with ``p`` on items of ``shape`` (C, H, W).

    ``num_classes = K > 0`` (a conditional UNet) adds ``num_class_embeds = K + 1``, the null class included.
    """
    C, H, W = unet.check(p, shape)
    mult = list(p.channel_mult)
    if mult[0] != 1:
        raise ParameterError(
            "channel_mult",
            mult,
            "a first entry of 1: diffusers' UNet2DModel gives conv_in and the time embedding "
            "block_out_channels[0] = channels x channel_mult[0] channels, the sandbox gives them channels",
        )
    if p.channels < 4:
        raise ParameterError(
            "channels", p.channels, "4 or more: diffusers' sinusoidal embedding divides by channels // 2 - 1"
        )
    heights = [H // 2**level for level in range(len(mult))]
    attends = [h in p.attention_resolutions for h in heights]
    widths = [p.channels * m for m, a in zip(mult, attends) if a] + [p.channels * mult[-1]]
    cfg: dict[str, Any] = {
        "_class_name": "UNet2DModel",
        "sample_size": H if H == W else [H, W],
        "in_channels": C,
        "out_channels": C,
        "center_input_sample": False,
        "time_embedding_type": "positional",
        "flip_sin_to_cos": False,
        "freq_shift": 1,
        "down_block_types": ["AttnDownBlock2D" if a else "DownBlock2D" for a in attends],
        "mid_block_type": "UNetMidBlock2D",
        "up_block_types": ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attends)],
        "block_out_channels": [p.channels * m for m in mult],
        "layers_per_block": p.num_res_blocks,
        "mid_block_scale_factor": 1,
        "downsample_padding": 1,
        "downsample_type": "conv",
        "upsample_type": "conv",
        "dropout": p.dropout,
        "act_fn": "silu",
        "attention_head_dim": _head_dim(p, widths),
        "norm_num_groups": p.groups,
        "attn_norm_num_groups": None,
        "norm_eps": GROUPNORM_EPS,
        "resnet_time_scale_shift": "default",
        "add_attention": True,
    }
    if num_classes:
        cfg |= {"class_embed_type": None, "num_class_embeds": num_classes + 1}
    return cfg


_RESNET = {"norm1": "norm1", "conv1": "conv1", "temb_proj": "time_emb_proj", "norm2": "norm2", "conv2": "conv2"}


def _names(p: UNetParams) -> dict[str, str]:
    """Sandbox module prefix -> diffusers module prefix, for every module but the attentions' ``qkv``."""
    levels = len(p.channel_mult)
    names = {"conv_in": "conv_in", "out.norm": "conv_norm_out", "out.conv": "conv_out"}
    names |= {"embed.mlp.0": "time_embedding.linear_1", "embed.mlp.2": "time_embedding.linear_2"}
    names["class_embed"] = "class_embedding"

    def stage(src: str, dst: str, j: int) -> None:
        names.update({f"{src}.block.{a}": f"{dst}.resnets.{j}.{b}" for a, b in _RESNET.items()})
        names[f"{src}.block.shortcut"] = f"{dst}.resnets.{j}.conv_shortcut"
        names[f"{src}.attention.norm"] = f"{dst}.attentions.{j}.group_norm"
        names[f"{src}.attention.proj_out"] = f"{dst}.attentions.{j}.to_out.0"
        names[f"{src}.attention.qkv"] = f"{dst}.attentions.{j}"

    i = 0
    for level in range(levels):
        for j in range(p.num_res_blocks):
            stage(f"down.{i}", f"down_blocks.{level}", j)
            i += 1
        if level != levels - 1:
            names[f"down.{i}.conv"] = f"down_blocks.{level}.downsamplers.0.conv"
            i += 1
    stage("mid.0", "mid_block", 0)
    stage("mid.1", "mid_block", 1)
    i = 0
    for block, level in enumerate(reversed(range(levels))):
        for j in range(p.num_res_blocks + 1):
            stage(f"up.{i}", f"up_blocks.{block}", j)
            i += 1
        if level != 0:
            names[f"up.{i}.conv"] = f"up_blocks.{block}.upsamplers.0.conv"
            i += 1
    return names


def _num_classes(state_dict: dict[str, torch.Tensor], p: UNetParams) -> int:
    """``K`` of a conditional UNet, whose ``class_embed.weight`` is (K + 1, 4 channels); 0 when it has none."""
    table = state_dict.get("class_embed.weight")
    if table is None:
        return 0
    if table.ndim != 2 or table.shape[0] < 2 or table.shape[1] != 4 * p.channels:
        raise ValueError(
            f"UNet weight 'class_embed.weight' has shape {tuple(table.shape)}, not (K + 1, {4 * p.channels}) "
            f"with K >= 1 classes: it does not belong to a UNet with {p.channels} channels"
        )
    return table.shape[0] - 1


def to_diffusers(
    state_dict: dict[str, torch.Tensor], params: UNetParams | None, shape: Sequence[int], /, *, time_shift: float
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The UNet's ``state_dict`` as a ``UNet2DModel`` ``(config, state_dict)`` (see the module's table)."""
    p = params if params is not None else UNetParams()
    cfg = config(p, shape, _num_classes(state_dict, p))
    names = _names(p)
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        module, _, leaf = key.rpartition(".")
        if module not in names:
            raise ValueError(f"UNet weight '{key}' has no diffusers counterpart: the layout of .unet changed")
        target = names[module]
        linear = value.reshape(value.shape[0], -1) if leaf == "weight" else value  # a 1x1 conv's (C, C', 1, 1)
        if module.endswith(".attention.qkv"):  # 3C outputs: the q, k and v blocks of C rows -> three linears
            for name, part in zip(("to_q", "to_k", "to_v"), linear.chunk(3)):
                out[f"{target}.{name}.{leaf}"] = part.clone()
        elif module.endswith(".attention.proj_out"):
            out[f"{target}.{leaf}"] = linear.clone()
        elif module == "embed.mlp.0" and leaf == "weight":
            out[f"{target}.{leaf}"] = shift_time(value, p.channels, time_shift)
        else:
            out[f"{target}.{leaf}"] = value.clone()
    return cfg, out
