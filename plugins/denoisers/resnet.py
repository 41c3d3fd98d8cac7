"""A residual conv stack at full resolution: the DDPM UNet's blocks without any down-sampling.

``conv3x3 -> num_blocks x ResBlock (optionally one self-attention block
half-way) -> GroupNorm - SiLU - conv3x3``, every residual block conditioned on
the noise level through DDPM's time embedding (Ho et al. 2020). Its receptive
field grows by 4 pixels per block, so turn ``attention`` on for global
structure on larger images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from sandbox_plugins.denoisers import checks
from sandbox_plugins.denoisers.layers import (
    AttentionBlock,
    NoiseEmbedding,
    OutputHead,
    ResAttn,
    ResBlock,
    add_class,
    class_table,
    ddpm_init,
)
from sandbox_plugins.denoisers.params import ResNetParams
from torch import nn


class ResNet(nn.Module):
    """Full-resolution residual stack: ``forward(x, c_noise, class_labels=None)`` with x (B, C, H, W) and c_noise
    (B,); with ``num_classes = K > 0`` the class is added to the noise-level embedding
    (:func:`.layers.class_table`)."""

    def __init__(self, p: ResNetParams, shape: Sequence[int], num_classes: int = 0):
        super().__init__()
        C, _, _ = checks.image_shape("resnet", shape)
        ch, temb_dim = p.channels, 4 * p.channels
        self.embed = NoiseEmbedding(ch, temb_dim)
        self.conv_in = ddpm_init(nn.Conv2d(C, ch, 3, padding=1))
        half = p.num_blocks // 2
        self.blocks = nn.ModuleList(
            ResAttn(
                ResBlock(ch, ch, temb_dim, p.dropout, p.groups),
                AttentionBlock(ch, p.num_heads, p.groups) if p.attention and i == max(half - 1, 0) else None,
            )
            for i in range(p.num_blocks)
        )
        self.out = OutputHead(ch, C, p.groups)
        self.class_embed = class_table(num_classes, temb_dim)  # last: the layers above draw as when unconditional

    def forward(
        self, x: torch.Tensor, c_noise: torch.Tensor, class_labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        temb = add_class(self.embed(c_noise, x.shape[0], x.dtype), self.class_embed, class_labels)
        h = self.conv_in(x)
        for block in self.blocks:
            h = block(h, temb)
        return self.out(h)


def build(params: ResNetParams | None, shape: Sequence[int], num_classes: int = 0) -> ResNet:
    """The full-resolution residual stack for items of ``shape`` = (C, H, W), on ``num_classes`` classes (0: none)."""
    return ResNet(params if params is not None else ResNetParams(), shape, num_classes)
