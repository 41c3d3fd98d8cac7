"""The DDPM UNet of Ho et al. (2020), "Denoising Diffusion Probabilistic Models".

The architecture of their ``diffusion_tf/models/unet.py`` (and of diffusers'
``google/ddpm-cifar10-32``): a PixelCNN++-style UNet with GroupNorm residual
blocks, self-attention at chosen resolutions and in the middle, stride-2
conv down-sampling, nearest + conv up-sampling and skip concatenation. With
:class:`UNetParams` defaults on 3x32x32 images it has the paper's 35.7M
parameters (35,746,307).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from sandbox_plugins.denoisers import checks
from sandbox_plugins.denoisers.layers import (
    AttentionBlock,
    Downsample,
    NoiseEmbedding,
    OutputHead,
    ResAttn,
    ResBlock,
    Upsample,
    add_class,
    class_table,
    ddpm_init,
)
from sandbox_plugins.denoisers.params import UNetParams
from torch import nn

from sandbox.errors import ParameterError
from sandbox.params import divides


def check(p: UNetParams, shape: Sequence[int]) -> tuple[int, int, int]:
    """What of ``p`` depends on the item shape (the rest :class:`UNetParams` checks itself); return ``(C, H, W)``."""
    C, H, W = checks.image_shape("unet", shape)
    mult = list(p.channel_mult)
    halvings = len(mult) - 1
    if H % 2**halvings or W % 2**halvings:
        raise ParameterError(
            "channel_mult",
            mult,
            f"at most {_max_levels(H, W)} entries for {H}x{W} images: "
            f"{len(mult)} levels halve H and W {halvings} times, so both must be divisible by "
            f"{2**halvings}",
        )
    resolutions = [H // 2**level for level in range(len(mult))]
    unused = [r for r in p.attention_resolutions if r not in resolutions]
    if unused:
        raise ParameterError(
            "attention_resolutions",
            list(p.attention_resolutions),
            f"a subset of {resolutions}, the feature-map heights of {H}x{W} images with "
            f"channel_mult {mult}; {unused} never occur",
        )
    for level, m in enumerate(mult[:-1]):  # the last level has the middle's width, which UNetParams checks
        if resolutions[level] in p.attention_resolutions:
            divides(
                p,
                "num_heads",
                p.channels * m,
                f"the {p.channels * m} channels of the attention at height {resolutions[level]}",
            )
    return C, H, W


def _max_levels(H: int, W: int) -> int:
    levels = 1
    while H % 2**levels == 0 and W % 2**levels == 0:
        levels += 1
    return levels


class UNet(nn.Module):
    """DDPM UNet: ``forward(x, c_noise, class_labels=None)`` with x of shape (B, C, H, W) and c_noise (B,) on the
    DDPM timestep scale; with ``num_classes = K > 0``, the class (int64 (B,) in [0, K], K the null class, None: all
    null) is embedded by ``class_embed`` and added to the noise-level embedding (:func:`.layers.class_table`)."""

    def __init__(self, p: UNetParams, shape: Sequence[int], num_classes: int = 0):
        super().__init__()
        C, H, _ = check(p, shape)
        ch, mult, attn = p.channels, list(p.channel_mult), set(p.attention_resolutions)
        temb_dim = 4 * ch
        self.embed = NoiseEmbedding(ch, temb_dim)
        self.conv_in = ddpm_init(nn.Conv2d(C, ch, 3, padding=1))

        def stage(c_in: int, c_out: int, height: int) -> ResAttn:
            block = ResBlock(c_in, c_out, temb_dim, p.dropout, p.groups)
            return ResAttn(block, AttentionBlock(c_out, p.num_heads, p.groups) if height in attn else None)

        # Down path: every output is kept for a skip connection.
        self.down = nn.ModuleList()
        skips, c, height = [ch], ch, H
        for level, m in enumerate(mult):
            for _ in range(p.num_res_blocks):
                self.down.append(stage(c, ch * m, height))
                c = ch * m
                skips.append(c)
            if level != len(mult) - 1:
                self.down.append(Downsample(c))
                height //= 2
                skips.append(c)

        # Middle: res - attention - res.
        self.mid = nn.ModuleList(
            [
                ResAttn(ResBlock(c, c, temb_dim, p.dropout, p.groups), AttentionBlock(c, p.num_heads, p.groups)),
                ResAttn(ResBlock(c, c, temb_dim, p.dropout, p.groups)),
            ]
        )

        # Up path: num_res_blocks + 1 blocks per level, each on [h, skip] concatenated.
        self.up = nn.ModuleList()
        for level in reversed(range(len(mult))):
            for _ in range(p.num_res_blocks + 1):
                self.up.append(stage(c + skips.pop(), ch * mult[level], height))
                c = ch * mult[level]
            if level != 0:
                self.up.append(Upsample(c))
                height *= 2
        assert not skips

        self.out = OutputHead(c, C, p.groups)
        self.class_embed = class_table(num_classes, temb_dim)  # last: the layers above draw as when unconditional

    def forward(
        self, x: torch.Tensor, c_noise: torch.Tensor, class_labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        temb = add_class(self.embed(c_noise, x.shape[0], x.dtype), self.class_embed, class_labels)
        hs = [self.conv_in(x)]
        for module in self.down:
            hs.append(module(hs[-1], temb))
        h = hs[-1]
        for module in self.mid:
            h = module(h, temb)
        for module in self.up:
            h = module(h, temb) if isinstance(module, Upsample) else module(torch.cat([h, hs.pop()], dim=1), temb)
        return self.out(h)


def build(params: UNetParams | None, shape: Sequence[int], num_classes: int = 0) -> UNet:
    """The DDPM UNet for items of ``shape`` = (C, H, W), conditioned on ``num_classes`` classes (0: unconditional)."""
    return UNet(params if params is not None else UNetParams(), shape, num_classes)
