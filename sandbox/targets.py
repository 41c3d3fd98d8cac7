"""Prediction targets: what the network outputs, and the conversion to a denoised estimate.

With ``x_t = alpha x_0 + sigma eps``:

* ``epsilon``: the noise (Ho et al. 2020); ``x_0 = (x_t - sigma eps) / alpha``.
* ``x0``: the clean data directly.
* ``v``: ``v = alpha eps - sigma x_0`` (Salimans & Ho 2022);
  ``x_0 = (alpha x_t - sigma v) / (alpha^2 + sigma^2)``.

All conversion between targets lives here; samplers only ever see ``x_0``.
"""

from __future__ import annotations

import torch

TARGETS = ("epsilon", "x0", "v")


def training_target(target: str, x0: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The regression target for the network output."""
    if target == "epsilon":
        return eps
    if target == "x0":
        return x0
    if target == "v":
        return alpha * eps - sigma * x0
    raise ValueError(f"unknown prediction target {target!r}; expected one of {', '.join(TARGETS)}")


def to_x0(target: str, output: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The denoised estimate ``x_0`` implied by a network output for ``target``."""
    if target == "epsilon":
        return (x_t - sigma * output) / alpha
    if target == "x0":
        return output
    if target == "v":
        return (alpha * x_t - sigma * output) / (alpha**2 + sigma**2)
    raise ValueError(f"unknown prediction target {target!r}; expected one of {', '.join(TARGETS)}")


def expand(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample (B,) tensor so it broadcasts against ``like`` (B, ...)."""
    return value.reshape(value.shape + (1,) * (like.ndim - value.ndim)).to(like.dtype)


class Denoiser(torch.nn.Module):
    """Wraps a network into ``D(x_t, t) -> x_0``, the one form every sampler uses."""

    def __init__(self, net: torch.nn.Module, schedule, target: str = "epsilon"):
        super().__init__()
        if target not in TARGETS:
            raise ValueError(f"unknown prediction target {target!r}; expected one of {', '.join(TARGETS)}")
        self.net = net
        self.schedule = schedule
        self.target = target

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x_t.device, dtype=torch.float32)
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        alpha, sigma = self.schedule.alpha_sigma(t)
        output = self.net(x_t, self.schedule.c_noise(t)).to(x_t.dtype)
        return to_x0(self.target, output, x_t, expand(alpha, x_t), expand(sigma, x_t))
