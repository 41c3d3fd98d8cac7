"""Prediction targets and preconditioning: what the network outputs, and how that becomes x0.

With ``x_t = alpha x_0 + sigma eps``, written in the scale-free form of
Karras et al. (2022) as ``x_t / alpha = x_0 + sigma~ eps`` with
``sigma~ = sigma / alpha``:

* ``epsilon``: the noise (Ho et al. 2020); ``x_0 = (x_t - sigma eps) / alpha``.
* ``x0``: the clean data directly.
* ``v``: ``v = alpha eps - sigma x_0`` (Salimans & Ho 2022);
  ``x_0 = (alpha x_t - sigma v) / (alpha^2 + sigma^2)``.
* ``edm``: EDM preconditioning (Karras et al. 2022, table 1):
  ``D(x; sigma~) = c_skip x~ + c_out F(c_in x~, c_noise)`` with
  ``c_skip = sigma_data^2 / (sigma~^2 + sigma_data^2)``,
  ``c_out = sigma~ sigma_data / sqrt(sigma~^2 + sigma_data^2)``,
  ``c_in = 1 / sqrt(sigma~^2 + sigma_data^2)``, and the network ``F`` regresses
  ``(x_0 - c_skip x~) / c_out``.

All conversion between targets lives here; samplers only ever see ``x_0``.
"""

from __future__ import annotations

import torch

TARGETS = ("epsilon", "x0", "v", "edm")


def expand(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample (B,) tensor so it broadcasts against ``like`` (B, ...)."""
    value = torch.as_tensor(value, device=like.device)
    return value.reshape(value.shape + (1,) * (like.ndim - value.ndim)).to(like.dtype)


class Parameterization:
    """One prediction target: the network's input scale, its regression target, and the way back to x0."""

    def __init__(self, target: str = "epsilon", sigma_data: float = 0.5):
        if target not in TARGETS:
            raise ValueError(f"unknown prediction target {target!r}; expected one of {', '.join(TARGETS)}")
        self.target = target
        self.sigma_data = sigma_data

    def _edm(self, alpha, sigma):
        s = sigma / alpha
        d2 = self.sigma_data**2
        c_skip = d2 / (s**2 + d2)
        c_out = s * self.sigma_data / (s**2 + d2).sqrt()
        c_in = 1.0 / (s**2 + d2).sqrt()
        return c_skip, c_out, c_in

    def c_in(self, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Scale applied to ``x_t`` before the network (1 except for ``edm``: ``c_in / alpha``)."""
        if self.target == "edm":
            return self._edm(alpha, sigma)[2] / alpha
        return torch.ones_like(alpha)

    def target_of(self, x0: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The regression target for the network output."""
        if self.target == "epsilon":
            return eps
        if self.target == "x0":
            return x0
        if self.target == "v":
            return alpha * eps - sigma * x0
        c_skip, c_out, _ = self._edm(alpha, sigma)
        x_scaled = x0 + (sigma / alpha) * eps
        return (x0 - c_skip * x_scaled) / c_out

    def output_for(self, x0: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """What a perfect network outputs when the true denoised value is ``x0``."""
        eps = (x_t - alpha * x0) / sigma
        return self.target_of(x0, eps, alpha, sigma)

    def to_x0(self, output: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The denoised estimate ``x_0`` implied by a network output."""
        if self.target == "epsilon":
            return (x_t - sigma * output) / alpha
        if self.target == "x0":
            return output
        if self.target == "v":
            return (alpha * x_t - sigma * output) / (alpha**2 + sigma**2)
        c_skip, c_out, _ = self._edm(alpha, sigma)
        return c_skip * (x_t / alpha) + c_out * output

    def x0_error_scale(self, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``||x0 error||^2 / ||output error||^2``: converts this target's MSE to an MSE on x0."""
        if self.target == "epsilon":
            return (sigma / alpha) ** 2
        if self.target == "x0":
            return torch.ones_like(alpha)
        if self.target == "v":
            return (sigma / (alpha**2 + sigma**2)) ** 2
        return self._edm(alpha, sigma)[1] ** 2


def training_target(target: str, x0, eps, alpha, sigma) -> torch.Tensor:
    """The regression target for ``target`` (see :class:`Parameterization`)."""
    return Parameterization(target).target_of(x0, eps, alpha, sigma)


def to_x0(target: str, output, x_t, alpha, sigma) -> torch.Tensor:
    """The denoised estimate implied by a network output for ``target``."""
    return Parameterization(target).to_x0(output, x_t, alpha, sigma)


class Denoiser(torch.nn.Module):
    """Wraps a network into ``D(x_t, t) -> x_0``, the one form every sampler uses.

    A network with ``is_analytic = True`` (the closed-form oracle) provides
    ``exact_x0(x_t, alpha, sigma)``; its answer still passes through the
    target's output form and back, so the conversion is exercised too.
    """

    def __init__(self, net: torch.nn.Module, schedule, target: str | Parameterization = "epsilon"):
        super().__init__()
        self.net = net
        self.schedule = schedule
        self.param = target if isinstance(target, Parameterization) else Parameterization(target)

    @property
    def target(self) -> str:
        return self.param.target

    def forward(self, x_t: torch.Tensor, t) -> torch.Tensor:
        t = torch.as_tensor(t, device=x_t.device, dtype=torch.float32)
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        alpha, sigma = self.schedule.alpha_sigma(t)
        alpha, sigma = expand(alpha, x_t), expand(sigma, x_t)
        if getattr(self.net, "is_analytic", False):
            output = self.param.output_for(self.net.exact_x0(x_t, alpha, sigma), x_t, alpha, sigma)
        else:
            output = self.net(self.param.c_in(alpha, sigma) * x_t, self.schedule.c_noise(t)).to(x_t.dtype)
        return self.param.to_x0(output, x_t, alpha, sigma)
