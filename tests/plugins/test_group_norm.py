"""GroupNorm's closed-form backward against autograd through PyTorch's group norm, in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sandbox_plugins.denoisers.group_norm import GroupNorm, closed_form_backward

CL = torch.channels_last


def _inputs(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * 3 + 1).contiguous(memory_format=CL)  # a mean far from 0, as after a conv
    dy = torch.randn(shape, generator=g).contiguous(memory_format=CL)
    return x, dy


@pytest.mark.parametrize("shape,groups", [((2, 64, 32, 32), 32), ((3, 24, 32, 40), 8), ((2, 12, 32, 32), 2)])
def test_closed_form_gradients_match_autograd_in_float64(shape, groups):
    x, dy = _inputs(shape)
    norm = GroupNorm(groups, shape[1], eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2.0, shape[1]))
        norm.bias.copy_(torch.linspace(-1.0, 1.0, shape[1]))
    assert closed_form_backward(x, groups)
    x.requires_grad_()
    y = norm(x)
    assert y.is_contiguous(memory_format=CL)
    got = torch.autograd.grad(y, (x, norm.weight, norm.bias), dy)
    assert got[0].is_contiguous(memory_format=CL)

    x64 = x.detach().double().requires_grad_()
    w64, b64 = (p.detach().double().requires_grad_() for p in (norm.weight, norm.bias))
    y64 = F.group_norm(x64, groups, w64, b64, 1e-6)
    expected = torch.autograd.grad(y64, (x64, w64, b64), dy.double())
    torch.testing.assert_close(y.double(), y64, atol=1e-5, rtol=1e-5)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g.double(), e, atol=1e-4 * float(e.abs().max()), rtol=1e-4)


def test_the_closed_form_is_taken_only_where_it_is_faster():
    """Channels-last CPU float32 with fewer than 8 channels per group and at least 32x32 pixels."""
    x, _ = _inputs((2, 64, 32, 32))
    assert closed_form_backward(x, 32)
    assert not closed_form_backward(x, 8)  # 8 channels per group
    assert not closed_form_backward(x.contiguous(), 32)  # channels-first
    assert not closed_form_backward(x.double(), 32)
    assert not closed_form_backward(_inputs((2, 64, 16, 16))[0], 32)  # too few pixels
    assert not closed_form_backward(_inputs((2, 64, 1, 1))[0], 32)  # both layouts at once


def test_without_gradients_it_is_nn_group_norm():
    x, _ = _inputs((2, 64, 32, 32))
    norm = GroupNorm(32, 64, eps=1e-6)
    with torch.no_grad():
        assert torch.equal(norm(x), F.group_norm(x, 32, norm.weight, norm.bias, 1e-6))
