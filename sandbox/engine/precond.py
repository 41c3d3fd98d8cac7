"""The preconditioned denoiser ``D(x_t, t) = c_skip x_t + c_out F(c_in x_t, c_noise)`` (Karras et al. 2022, eq. 7).

The scalings come from one row of :data:`sandbox.targets.TARGETS`; the loss
and every sampler reach the network through :meth:`Preconditioned.network`,
the one place it is called.
"""

from __future__ import annotations

from typing import Optional, Protocol, Union

import torch

from sandbox.protocols import ExactX0, Schedule
from sandbox.targets import TARGETS, Scalings, scalings


class LabelledDenoise(Protocol):
    """``model(x_t, t, labels=None) -> x_0`` estimate: a :class:`Preconditioned` network or :func:`exact_denoise`;
    ``labels`` (the items' classes, or the null class) None for a model trained without them."""

    def __call__(
        self, x_t: torch.Tensor, t: Union[float, torch.Tensor], labels: Optional[torch.Tensor] = None, /
    ) -> torch.Tensor: ...


def per_item(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-item ``(B,)`` tensor reshaped to broadcast against ``like`` ``(B, ...)``, in its dtype and device."""
    return value.reshape(value.shape + (1,) * (like.ndim - value.ndim)).to(like.device, like.dtype)


def times(t: Union[float, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``t`` as one float64 time per item of ``x``: a number or a 0-d tensor is repeated."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return t.expand(x.shape[0]) if t.ndim == 0 else t.to(torch.float64)


class Preconditioned(torch.nn.Module):
    """Wraps a denoiser network ``F`` into ``D(x_t, t) -> x_0`` for one prediction target.

    ``forward(x_t, t)`` is the :class:`sandbox.protocols.Denoise` a sampler
    calls; :meth:`regression_target` is what the loss asks ``F`` to output.
    """

    def __init__(self, net: torch.nn.Module, schedule: Schedule, target: str = "epsilon", sigma_data: float = 0.5):
        super().__init__()
        if target not in TARGETS:
            raise ValueError(f"unknown prediction target {target!r}; expected one of {', '.join(TARGETS)}")
        self.net, self.schedule, self.target, self.sigma_data = net, schedule, target, sigma_data

    def scalings(self, t: torch.Tensor) -> Scalings:
        """The target's scalings at times ``t`` (one per item, float64)."""
        return scalings(self.target, self.schedule, t, self.sigma_data)

    def network(self, x_t: torch.Tensor, s: Scalings, class_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``F(c_in x_t, c_noise)``, or ``F(c_in x_t, c_noise, class_labels)`` for a class-conditional network:
        the one call of the network."""
        x, c_noise = per_item(s.c_in, x_t) * x_t, s.c_noise.to(x_t.device, torch.float32)
        if class_labels is None:
            return self.net(x, c_noise)
        return self.net(x, c_noise, class_labels.to(x_t.device))

    def regression_target(self, x0: torch.Tensor, eps: torch.Tensor, s: Scalings) -> torch.Tensor:
        """``F* = (x_0 - c_skip x_t) / c_out`` for ``x_t = alpha x_0 + sigma eps``, the output that gives ``D = x_0``.

        Written as ``((1 - c_skip alpha) x_0 - c_skip sigma eps) / c_out`` with float64 coefficients, so
        epsilon's target is ``eps`` to rounding even where alpha is nearly 0.
        """
        a = (1.0 - s.c_skip * s.alpha) / s.c_out
        b = -s.c_skip * s.sigma / s.c_out
        return per_item(a, x0) * x0 + per_item(b, x0) * eps

    def forward(
        self, x_t: torch.Tensor, t: Union[float, torch.Tensor], class_labels: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        s = self.scalings(times(t, x_t))
        out = self.network(x_t, s, class_labels).to(x_t.dtype)
        return per_item(s.c_skip, x_t) * x_t + per_item(s.c_out, x_t) * out


def exact_denoise(
    exact_x0: ExactX0, schedule: Schedule, target: str = "x0", sigma_data: float = 0.5
) -> LabelledDenoise:
    """The denoise function of an exact ``E[x_0 | x_t]``, passed through ``target``'s output and back.

    ``D = c_skip x_t + c_out F*`` with ``F* = (x_0 - c_skip x_t) / c_out`` is
    ``x_0`` again up to rounding: with the ``oracle`` it measures a sampler's
    and a schedule's own discretisation error, plus the conversion of
    ``target``, free of any network error. ``labels`` (a labelled dataset's
    classes, or its null class) ask for the exact class-conditional ``E[x_0 | x_t, c]``.
    """

    def denoise(
        x_t: torch.Tensor, t: Union[float, torch.Tensor], labels: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        s = scalings(target, schedule, times(t, x_t), sigma_data)
        alpha, sigma = per_item(s.alpha, x_t), per_item(s.sigma, x_t)
        x0 = exact_x0(x_t, alpha, sigma) if labels is None else exact_x0(x_t, alpha, sigma, labels)
        c_skip, c_out = per_item(s.c_skip, x_t), per_item(s.c_out, x_t)
        return c_skip * x_t + c_out * ((x0 - c_skip * x_t) / c_out)

    return denoise
