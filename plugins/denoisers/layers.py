"""Building blocks of the DDPM UNet, shared by every built-in denoiser.

Each block follows ``diffusion_tf/models/unet.py`` of Ho et al. (2020),
"Denoising Diffusion Probabilistic Models" (the code behind diffusers'
``google/ddpm-cifar10-32``). Parameters keep PyTorch's channels-first shapes
(1x1 convs stay ``Conv2d`` weights, so state dicts map one to one onto
DDPM's and diffusers' names), while the work is laid out for speed:

* every block accepts channels-last (NHWC) tensors and keeps them
  channels-last, which oneDNN convolutions on CPUs and cuDNN on tensor-core
  GPUs run fastest; the attention reads its tokens as a free view of NHWC;
* the attention projects tokens with ``F.linear`` so that q, k and v have a
  unit stride along the head dimension, the layout the fused
  ``scaled_dot_product_attention`` kernels (FlashAttention on CUDA and CPU)
  need; otherwise PyTorch falls back to the unfused math path. Training on the
  CPU with at most ``EXPLICIT_TOKENS`` tokens, the attention is two batched
  matmuls and a softmax instead (:func:`explicit_attention`): PyTorch's CPU
  FlashAttention backward runs slower than they do there;
* GroupNorm's backward on channels-last CPU tensors with few channels per
  group is a closed form (:mod:`sandbox_plugins.denoisers.group_norm`);
* additions whose operand is not needed by backward are done in place;
* dropout on the CPU draws its mask from ``torch.rand`` (half the time of
  ``bernoulli_``); on other devices it is PyTorch's fused dropout.
"""

from __future__ import annotations

import math
from typing import TypeVar, cast

import torch
import torch.nn.functional as F
from sandbox_plugins.denoisers.group_norm import GroupNorm
from torch import nn

GROUPNORM_EPS = 1e-6  # as in DDPM's tf.contrib group_norm and diffusers
#: tokens up to which CPU training computes attention explicitly: forward and backward of 16 x 256 tokens of width
#: 128 took 0.75 times FlashAttention's time on 2 threads, 0.96 on 1; of 1,024 tokens 1.6 times (AVX-512, torch 2.14)
EXPLICIT_TOKENS = 256


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps ``t`` of shape (B,), giving (B, dim).

    ``get_timestep_embedding`` of Ho et al. (2020), the positional encoding of
    Vaswani et al. (2017), section 3.5, with ``half = dim // 2`` frequencies

        omega_i = exp(-log(max_period) * i / (half - 1)),   i = 0 .. half - 1,
        emb(t)  = [sin(t * omega_0), ..., sin(t * omega_{half-1}), cos(t * omega_0), ..., cos(t * omega_{half-1})],

    padded with one zero column when ``dim`` is odd. (``half - 1`` is taken as 1 when ``half == 1``.)
    """
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / max(half - 1, 1)
    angles = t.to(torch.float32)[:, None] * torch.exp(exponent)[None, :]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


Layer = TypeVar("Layer", nn.Linear, nn.Conv2d)


def ddpm_init(module: Layer, scale: float = 1.0) -> Layer:
    """DDPM's ``default_init(scale)``: variance scaling (fan-avg, uniform), zero bias.

    That is Glorot-uniform with gain sqrt(scale).

    ``scale=0`` zero-initialises the layer, as DDPM does for the last conv of
    each residual block, the attention output projection and the output conv.
    """
    weight = module.weight
    with torch.no_grad():
        if scale == 0:
            weight.zero_()
        else:
            nn.init.xavier_uniform_(weight, gain=math.sqrt(scale))
        if module.bias is not None:
            module.bias.zero_()
    return module


def group_norm(groups: int, channels: int) -> GroupNorm:
    return GroupNorm(groups, channels, eps=GROUPNORM_EPS)


class NoiseEmbedding(nn.Module):
    """DDPM's time embedding: ``c_noise`` (B,) -> :func:`timestep_embedding` of width ``dim``
    -> ``Linear(dim, temb_dim) - SiLU - Linear(temb_dim, temb_dim)``."""

    def __init__(self, dim: int, temb_dim: int):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(
            ddpm_init(nn.Linear(dim, temb_dim)), nn.SiLU(), ddpm_init(nn.Linear(temb_dim, temb_dim))
        )

    def forward(self, c_noise: torch.Tensor, batch: int, dtype: torch.dtype) -> torch.Tensor:
        c_noise = torch.as_tensor(c_noise, device=cast(nn.Linear, self.mlp[0]).weight.device).reshape(-1)
        if c_noise.numel() == 1:
            c_noise = c_noise.expand(batch)
        return self.mlp(timestep_embedding(c_noise, self.dim).to(dtype))


class Dropout(nn.Dropout):
    """Dropout (Srivastava et al. 2014): zero each value with probability ``p``, scale the rest by 1 / (1 - p).

    On the CPU the keep mask is ``U >= p`` with ``U ~ Uniform[0, 1)`` from
    ``torch.rand``, the same Bernoulli(1 - p) law as ``nn.Dropout`` at half
    its cost; elsewhere it is ``nn.Dropout`` itself.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        with torch.no_grad():
            mask = torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))
        return x * mask


class ResBlock(nn.Module):
    """``resnet_block`` of Ho et al. (2020).

    ``h = conv3x3(SiLU(GroupNorm(x)))``, plus ``Linear(SiLU(temb))`` broadcast
    over pixels, then ``conv3x3(dropout(SiLU(GroupNorm(h))))`` with the conv
    zero-initialised; the output is ``shortcut(x) + h``, the shortcut a 1x1
    conv (DDPM's ``nin_shortcut``) when the channel count changes.
    """

    def __init__(self, in_channels: int, out_channels: int, temb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = group_norm(groups, in_channels)
        self.conv1 = ddpm_init(nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.temb_proj = ddpm_init(nn.Linear(temb_dim, out_channels))
        self.norm2 = group_norm(groups, out_channels)
        self.dropout = Dropout(dropout)
        self.conv2 = ddpm_init(nn.Conv2d(out_channels, out_channels, 3, padding=1), scale=0.0)
        if in_channels != out_channels:
            self.shortcut: nn.Module = ddpm_init(nn.Conv2d(in_channels, out_channels, 1))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        # a convolution's backward needs its input, never its output: both sums are done in place
        h = self.conv1(F.silu(self.norm1(x)))
        h += self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        h += self.shortcut(x)
        return h


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d)) v`` (Vaswani et al. 2017, eq. 1) on (..., tokens, d) tensors as two batched
    matmuls: what ``F.scaled_dot_product_attention`` computes, with the weights kept for backward."""
    weights = torch.softmax((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1), dim=-1)
    return weights @ v


class AttentionBlock(nn.Module):
    """``attn_block`` of Ho et al. (2020): self-attention over all H*W pixels, with a residual connection.

    ``x + proj_out(softmax(q k^T / sqrt(d)) v)`` with ``q, k, v`` 1x1 convs of
    ``GroupNorm(x)`` and ``proj_out`` zero-initialised; ``num_heads`` splits
    the channels into heads of width ``d = C / num_heads`` (DDPM uses one).
    The attention itself is :func:`torch.nn.functional.scaled_dot_product_attention`
    on tokens of shape (B, heads, H*W, d) with unit stride along d; the 1x1
    convs are applied as ``F.linear`` on the (B, H*W, C) tokens, a free view
    of a channels-last tensor.
    """

    def __init__(self, channels: int, num_heads: int, groups: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = group_norm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        with torch.no_grad():  # DDPM initialises q, k and v as three separate C -> C layers
            for weight in self.qkv.weight.chunk(3):
                nn.init.xavier_uniform_(weight)
            cast(torch.Tensor, self.qkv.bias).zero_()
        self.proj_out = ddpm_init(nn.Conv2d(channels, channels, 1), scale=0.0)

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        B, C, H, W = x.shape
        heads = self.num_heads
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(B, H * W, C)  # a view when x is channels-last
        qkv = F.linear(tokens, self.qkv.weight.view(3 * C, C), self.qkv.bias)  # (B, H*W, 3C): q, k, v blocks
        q, k, v = qkv.view(B, H * W, 3, heads, C // heads).permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, H*W, d)
        if torch.is_grad_enabled() and x.device.type == "cpu" and H * W <= EXPLICIT_TOKENS:
            h = explicit_attention(q, k, v)  # faster to train on the CPU (the module docstring)
        else:
            h = F.scaled_dot_product_attention(q, k, v)
        h = h.transpose(1, 2).reshape(B, H * W, C)
        h = F.linear(h, self.proj_out.weight.view(C, C), self.proj_out.bias)
        return x + h.view(B, H, W, C).permute(0, 3, 1, 2)  # (B, C, H, W), channels-last


class Downsample(nn.Module):
    """DDPM's ``downsample(with_conv=True)``: a 3x3 conv with stride 2 halves H and W."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = ddpm_init(nn.Conv2d(channels, channels, 3, stride=2, padding=1))

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """DDPM's ``upsample(with_conv=True)``: nearest-neighbour doubling of H and W, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = ddpm_init(nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ResAttn(nn.Module):
    """A residual block, followed by self-attention when ``attention`` is set."""

    def __init__(self, block: ResBlock, attention: AttentionBlock | None = None):
        super().__init__()
        self.block = block
        self.attention = attention

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        x = self.block(x, temb)
        return self.attention(x) if self.attention is not None else x


class OutputHead(nn.Module):
    """DDPM's ``norm_out``: GroupNorm - SiLU - conv3x3 to the data channels, the conv zero-initialised."""

    def __init__(self, channels: int, out_channels: int, groups: int):
        super().__init__()
        self.norm = group_norm(groups, channels)
        self.conv = ddpm_init(nn.Conv2d(channels, out_channels, 3, padding=1), scale=0.0)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.conv(F.silu(self.norm(h)))


def class_table(num_classes: int, temb_dim: int) -> nn.Embedding | None:
    """The class table of a network conditioned on ``num_classes`` classes, or None when ``num_classes`` is 0.

    ``nn.Embedding(num_classes + 1, temb_dim)`` with PyTorch's default N(0, 1)
    init: row ``k`` is class ``k`` and row ``num_classes`` the null class
    (:func:`sandbox.protocols.null_label`, classifier-free guidance's dropped
    label). Its row is added to the noise-level embedding, as in ADM (Dhariwal
    & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis": ``emb +
    label_emb(y)``) and EDM (Karras et al. 2022, "Elucidating the Design Space
    of Diffusion-Based Generative Models": the class mapped and summed with the
    noise embedding); diffusers' ``UNet2DModel(num_class_embeds=...)`` does the
    same. Create it after every other layer, so that those draw the same
    random numbers as in the unconditional network.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"num_classes must be an int >= 0 (0: unconditional), got {num_classes!r}")
    return nn.Embedding(num_classes + 1, temb_dim) if num_classes else None


def add_class(temb: torch.Tensor, table: nn.Embedding | None, class_labels: torch.Tensor | None) -> torch.Tensor:
    """``temb`` (B, temb_dim) plus the rows of ``table`` for ``class_labels`` (B,), int64 in [0, K].

    ``class_labels`` None on a conditional network means the null class ``K``
    for every item; on an unconditional one (``table`` None) it returns
    ``temb`` itself, and labels raise a ValueError. A single label is used for
    the whole batch.
    """
    if table is None:
        if class_labels is not None:
            raise ValueError(
                "class_labels given to an unconditional network: build it with num_classes=K to condition on a class"
            )
        return temb
    batch = temb.shape[0]
    if class_labels is None:
        labels = torch.full((batch,), table.num_embeddings - 1, dtype=torch.int64, device=temb.device)
    else:
        labels = torch.as_tensor(class_labels, device=table.weight.device)
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(f"class_labels must be integers in [0, {table.num_embeddings - 1}], got {labels.dtype}")
        labels = labels.reshape(-1)
        if labels.numel() == 1:
            labels = labels.expand(batch)
        elif labels.numel() != batch:
            raise ValueError(f"class_labels has {labels.numel()} labels for a batch of {batch} items")
    return temb + table(labels).to(temb.dtype)
