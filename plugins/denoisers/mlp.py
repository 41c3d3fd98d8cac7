"""A residual MLP denoiser for vectors (the 2-D toy data) and any small item shape, by flattening.

``Linear(D, hidden) -> layers x [h + Linear(dropout(SiLU(Linear(LayerNorm(h))
+ Linear(SiLU(temb)))))] -> LayerNorm - SiLU - Linear(hidden, D)``, with the
noise level embedded as in DDPM (Ho et al. 2020: sinusoidal embedding, then a
two-layer SiLU MLP) and the last layer of each residual branch and the output
layer zero-initialised, as DDPM does for its convs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from sandbox_plugins.denoisers import checks
from sandbox_plugins.denoisers.layers import NoiseEmbedding, add_class, class_table, ddpm_init
from sandbox_plugins.denoisers.params import MLPParams
from torch import nn


class MLPBlock(nn.Module):
    """Pre-norm residual block: ``h + Linear(dropout(SiLU(Linear(LayerNorm(h)) + Linear(SiLU(temb)))))``."""

    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = ddpm_init(nn.Linear(hidden, hidden))
        self.temb_proj = ddpm_init(nn.Linear(hidden, hidden))
        self.dropout = nn.Dropout(dropout)
        self.fc2 = ddpm_init(nn.Linear(hidden, hidden), scale=0.0)

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        a = self.fc1(self.norm(h)) + self.temb_proj(F.silu(temb))
        return h + self.fc2(self.dropout(F.silu(a)))


class MLP(nn.Module):
    """Residual MLP: ``forward(x, c_noise, class_labels=None)`` with x (B, *shape) and c_noise (B,); output has x's
    shape. With ``num_classes = K > 0`` the class is added to the noise-level embedding
    (:func:`.layers.class_table`)."""

    def __init__(self, p: MLPParams, shape: Sequence[int], num_classes: int = 0):
        super().__init__()
        self.shape = checks.item_shape("mlp", shape)
        dim = math.prod(self.shape)
        self.embed = NoiseEmbedding(p.hidden, p.hidden)
        self.inp = ddpm_init(nn.Linear(dim, p.hidden))
        self.blocks = nn.ModuleList(MLPBlock(p.hidden, p.dropout) for _ in range(p.layers))
        self.norm_out = nn.LayerNorm(p.hidden)
        self.out = ddpm_init(nn.Linear(p.hidden, dim), scale=0.0)
        self.class_embed = class_table(num_classes, p.hidden)  # last: the layers above draw as when unconditional

    def forward(
        self, x: torch.Tensor, c_noise: torch.Tensor, class_labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        temb = add_class(self.embed(c_noise, x.shape[0], x.dtype), self.class_embed, class_labels)
        h = self.inp(x.flatten(1))
        for block in self.blocks:
            h = block(h, temb)
        return self.out(F.silu(self.norm_out(h))).reshape(x.shape)


def build(params: MLPParams | None, shape: Sequence[int], num_classes: int = 0) -> MLP:
    """The residual MLP for items of any ``shape`` (flattened to ``prod(shape)`` features), on ``num_classes``
    classes (0: unconditional)."""
    return MLP(params if params is not None else MLPParams(), shape, num_classes)
