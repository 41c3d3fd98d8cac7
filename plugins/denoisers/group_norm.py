"""Group normalisation (Wu & He 2018, "Group Normalization") with a faster backward for channels-last CPU tensors.

:class:`GroupNorm` is ``nn.GroupNorm`` (the same parameters and forward)
except where PyTorch's own backward is slow: on a channels-last CPU tensor
with fewer than 8 channels per group and at least 32x32 pixels (the first
level of the CIFAR-10 UNets: 2 to 6 channels per group), PyTorch's kernel
took 1.4 to 2.3 times as long as the closed form below, written as
reductions over the pixels of a free (N, H*W, C) view (1 and 2 threads,
AVX-512, torch 2.14). With 8 or more channels per group PyTorch's was faster
(up to 3 times); at 16x16 the two took 0.75 to 1.11 of each other's time, at
8x8 PyTorch's was faster; at 64x64 with 4 channels per group the closed form
took 0.67 of PyTorch's time on 2 threads and 1.12 on one.

With ``x_hat = (x - mu) r`` per sample and group (``r`` the reciprocal
standard deviation, ``M`` the values in a group) the gradients are

    dx     = r (gamma dy - mean(gamma dy) - x_hat mean(gamma dy x_hat)),
    dgamma = sum over samples and pixels of dy x_hat,        dbeta = sum of dy,

the means over each group. Per sample and channel that is ``dx = a dy + b x
+ c``, with ``a = r gamma``, ``b = -r^2 B / M`` and ``c = (r^2 B mu - r A) /
M``, where ``A = sum gamma S1`` and ``B = r sum gamma (S2 - mu S1)`` over the
group's channels, from the pixel sums ``S1 = sum dy`` and ``S2 = sum dy x``:
two reductions and two fused multiply-adds over the tensor.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

#: the closed-form backward runs below this many channels per group and from this many pixels on
FEW_CHANNELS_PER_GROUP = 8
MANY_PIXELS = 32 * 32


def closed_form_backward(x: torch.Tensor, groups: int) -> bool:
    """Whether :class:`GroupNorm` takes the closed-form backward for ``x`` (see the module docstring)."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 4
        and x.shape[1] // groups < FEW_CHANNELS_PER_GROUP
        and x.shape[2] * x.shape[3] >= MANY_PIXELS
        and x.is_contiguous(memory_format=torch.channels_last)
        and not x.is_contiguous()
    )


class _ClosedFormGroupNorm(torch.autograd.Function):
    """PyTorch's group-norm forward; the closed-form backward of the module docstring."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float
    ) -> torch.Tensor:
        n, c, h, w = x.shape
        y, mean, rstd = torch.ops.aten.native_group_norm(x, weight, bias, n, c, h * w, groups, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.groups = groups
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, mean, rstd = ctx.saved_tensors
        n, c, h, w = x.shape
        groups = ctx.groups
        per_group = c // groups
        xs = x.permute(0, 2, 3, 1).reshape(n, h * w, c)  # views of channels-last tensors
        dys = dy.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(n, h * w, c)
        mu, r = mean.view(n, groups, 1), rstd.view(n, groups, 1)
        s1 = dys.sum(1).view(n, groups, per_group)
        centred = (dys * xs).sum(1).view(n, groups, per_group) - mu * s1  # sum over pixels of dy (x - mu)
        gamma = weight.view(1, groups, per_group)
        values = h * w * per_group
        a_sum = (gamma * s1).sum(-1, keepdim=True)
        b_sum = r * (gamma * centred).sum(-1, keepdim=True)
        a = (r * gamma).reshape(n, 1, c)
        b = (-r * r * b_sum / values).expand(n, groups, per_group).reshape(n, 1, c)
        offset = ((r * r * b_sum * mu - r * a_sum) / values).expand(n, groups, per_group).reshape(n, 1, c)
        dx = torch.addcmul(offset, xs, b).addcmul_(dys, a).view(n, h, w, c).permute(0, 3, 1, 2)
        return dx, (r * centred).sum(0).reshape(c), s1.sum(0).reshape(c), None, None


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` with the closed-form backward where that is faster (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.affine and torch.is_grad_enabled() and closed_form_backward(x, self.num_groups):
            return _ClosedFormGroupNorm.apply(x, self.weight, self.bias, self.num_groups, self.eps)
        return super().forward(x)
