"""``check_denoiser``: a network or an analytic denoiser against :mod:`sandbox.protocols`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from sandbox.contract import PROBLEMS, is_analytic
from sandbox.protocols import DataSplits
from sandbox.registry import Registry
from sandbox.testing.build import built, expect


def check_denoiser(
    denoiser: Any,
    shape: Sequence[int],
    params: Any = None,
    *,
    registry: Registry | None = None,
    batch: int = 2,
    data: DataSplits | None = None,
    steps: int = 4,
) -> Any:
    """Check a denoiser (a registered name, built for ``shape``, or a built object).

    A network is trained a few steps; an analytic denoiser
    (:class:`sandbox.protocols.AnalyticDenoiser`) is bound to ``data`` (when
    given) and its exact ``E[x_0 | x_t]`` checked.
    """
    shape = tuple(int(s) for s in shape)
    net, label = built("denoiser", denoiser, params, registry, shape)
    problems = PROBLEMS["denoiser"](net)
    expect(not problems, label, "; ".join(problems))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        x = torch.randn(batch, *shape)
        if is_analytic(net):
            if data is not None:
                alpha = torch.full((batch,) + (1,) * len(shape), 0.8)
                out = net.bind(data)(x, alpha, (1 - alpha**2).sqrt())
                expect(
                    out.shape == x.shape and bool(torch.isfinite(out).all()),
                    label,
                    "bind(data)(x_t, alpha, sigma) must be finite and keep x_t's shape",
                )
            return net
        c_noise = torch.linspace(50.0, 800.0, batch)
        out = net(x, c_noise)
        expect(
            isinstance(out, torch.Tensor) and out.shape == x.shape,
            label,
            f"forward(x, c_noise) on x of shape {tuple(x.shape)} returned shape "
            f"{tuple(getattr(out, 'shape', ()))}; expected x's shape",
        )
        expect(
            out.dtype == x.dtype and bool(torch.isfinite(out).all()),
            label,
            f"forward must return finite {x.dtype} values",
        )
        trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
        expect(trainable, label, "has no trainable parameters")
        # Zero-initialised output layers (as in DDPM) pass no gradient on the first step: allow a few.
        target = torch.randn_like(x)
        opt = torch.optim.Adam([p for _, p in trainable], lr=1e-3)
        reached = {n: False for n, _ in trainable}
        for _ in range(steps):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(net(x, c_noise), target)
            expect(math.isfinite(loss.item()), label, "the training loss became non-finite")
            loss.backward()
            for n, p in trainable:
                reached[n] |= p.grad is not None and bool(p.grad.abs().sum() > 0)
            opt.step()
        missing = [n for n, r in reached.items() if not r]
        expect(not missing, label, f"no gradient reached {missing[:5]} in {steps} steps")
        net.eval()
        with torch.no_grad():
            a, b = net(x, c_noise), net(x, c_noise + 250.0)
        expect(not torch.allclose(a, b), label, "the output does not depend on c_noise (the noise level)")
        net.train()
    return net
