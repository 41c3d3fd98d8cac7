"""Prediction targets and loss weightings: one table each, in the notation of Karras et al. (2022).

Every target is one row of scalings for ``x_t = alpha x_0 + sigma eps``
(Karras et al. 2022, eq. 7 and table 1, written for any schedule by
dividing through by alpha, ``sigma~ = sigma / alpha``)::

    D(x_t, t) = c_skip x_t + c_out F(c_in x_t, c_noise)

so the network ``F`` regresses ``F* = (x_0 - c_skip x_t) / c_out``, and an
error on ``F`` is ``c_out`` times an error on ``x_0``:

=========  ========================  ===========================  ======================  ====================
target     c_skip                    c_out                        c_in                    c_noise
=========  ========================  ===========================  ======================  ====================
epsilon    1 / alpha                 -sigma / alpha               1                       schedule (1000 t)
x0         0                         1                            1                       schedule (1000 t)
v          alpha / (alpha^2+sigma^2)  -sigma / (alpha^2+sigma^2)   1                       schedule (1000 t)
edm        s_d^2 / (alpha (s~^2+s_d^2))  s~ s_d / sqrt(s~^2+s_d^2)  1 / (alpha sqrt(s~^2+s_d^2))  ln(s~) / 4
=========  ========================  ===========================  ======================  ====================

(``s_d`` is ``sigma_data``.) These give ``F* = eps`` for epsilon (Ho et al.
2020), ``F* = x_0``, ``F* = v = alpha eps - sigma x_0`` (Salimans & Ho 2022)
and EDM's preconditioned target. A row's own loss weight, the x0-space
weight under which the MSE on ``F`` is unweighted, is ``1 / c_out^2``; for
edm that is EDM's ``lambda(sigma)``.

A weighting is the weight ``lambda`` on the x0 error; the loss puts
``lambda c_out^2`` on the network's error. ``uniform`` keeps each target's
own weight (DDPM's "L_simple", Ho et al. 2020, eq. 14, on whatever the
network predicts); ``min_snr`` is ``min(SNR, gamma)`` (Hang et al. 2023);
``edm`` is ``(sigma~^2 + s_d^2) / (sigma~ s_d)^2`` (Karras et al. 2022).

Adding a target or a weighting is one entry in :data:`TARGETS` or
:data:`WEIGHTINGS`; recipes, the loss, sampling and the doctor read these
tables. This module does not import torch (recipes validate against it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Optional

if TYPE_CHECKING:
    from torch import Tensor

    from sandbox.protocols import Schedule


class Scalings(NamedTuple):
    """One target's scalings at a batch of times, one value per item (shape ``(B,)``, float64)."""

    # fmt: off
    alpha: Tensor
    sigma: Tensor
    c_skip: Tensor
    c_out: Tensor
    c_in: Tensor
    c_noise: Tensor   #: the network's noise input
    weight: Tensor    #: the row's own x0-space loss weight, ``1 / c_out^2``
    # fmt: on


@dataclass(frozen=True)
class Target:
    """One row of the preconditioning table."""

    #: ``(alpha, sigma, sigma_data) -> (c_skip, c_out, c_in)``
    scalings: Callable[[Tensor, Tensor, float], tuple[Tensor, Tensor, Tensor]]
    #: ``(alpha, sigma) -> c_noise``; None: the schedule's own ``c_noise(t)``
    c_noise: Optional[Callable[[Tensor, Tensor], Tensor]] = None
    description: str = ""


def _epsilon(alpha: Tensor, sigma: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor]:
    return 1.0 / alpha, -sigma / alpha, alpha.new_ones(())


def _x0(alpha: Tensor, sigma: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor]:
    return alpha.new_zeros(()), alpha.new_ones(()), alpha.new_ones(())


def _v(alpha: Tensor, sigma: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor]:
    norm = alpha**2 + sigma**2
    return alpha / norm, -sigma / norm, alpha.new_ones(())


def _edm(alpha: Tensor, sigma: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor]:
    s, d2 = sigma / alpha, sigma_data**2
    root = (s**2 + d2).sqrt()
    return d2 / (s**2 + d2) / alpha, s * sigma_data / root, 1.0 / (root * alpha)


def _edm_c_noise(alpha: Tensor, sigma: Tensor) -> Tensor:
    return (sigma / alpha).log() / 4.0


TARGETS: dict[str, Target] = {
    "epsilon": Target(_epsilon, description="the noise eps (Ho et al. 2020)"),
    "x0": Target(_x0, description="the clean data x_0"),
    "v": Target(_v, description="v = alpha eps - sigma x_0 (Salimans & Ho 2022)"),
    "edm": Target(_edm, _edm_c_noise, description="EDM preconditioning (Karras et al. 2022, table 1)"),
}


@dataclass(frozen=True)
class Weighting:
    """One loss weighting: ``lambda(alpha, sigma, sigma_data, gamma)`` on the x0 error, or the target's own."""

    x0_weight: Optional[Callable[[Tensor, Tensor, float, float], Tensor]]  #: None: the target's ``1 / c_out^2``
    description: str = ""


def _min_snr(alpha: Tensor, sigma: Tensor, sigma_data: float, gamma: float) -> Tensor:
    return ((alpha / sigma) ** 2).clamp(max=gamma)


def _edm_weight(alpha: Tensor, sigma: Tensor, sigma_data: float, gamma: float) -> Tensor:
    s2, d2 = (sigma / alpha) ** 2, sigma_data**2
    return (s2 + d2) / (s2 * d2)


WEIGHTINGS: dict[str, Weighting] = {
    "uniform": Weighting(None, "unweighted MSE on the target (L_simple of Ho et al. 2020)"),
    "min_snr": Weighting(_min_snr, "min(SNR, gamma) on the x0 error (Hang et al. 2023)"),
    "edm": Weighting(_edm_weight, "lambda(sigma) of Karras et al. (2022), table 1"),
}


def scalings(target: str, schedule: Schedule, t: Tensor, sigma_data: float = 0.5) -> Scalings:
    """The scalings of ``target`` at times ``t`` (shape ``(B,)``), in float64, each of shape ``(B,)``."""
    row = TARGETS[target]
    alpha, sigma = schedule.alpha_sigma(t.double())
    alpha, sigma = alpha.double(), sigma.double()
    c_skip, c_out, c_in = (c.expand_as(alpha) for c in row.scalings(alpha, sigma, sigma_data))
    c_noise = row.c_noise(alpha, sigma) if row.c_noise is not None else schedule.c_noise(t).double()
    return Scalings(alpha, sigma, c_skip, c_out, c_in, c_noise, 1.0 / c_out**2)


def loss_weight(weighting: str, s: Scalings, sigma_data: float, gamma: float) -> Tensor:
    """The weight on the network's squared error: ``lambda c_out^2`` (1 for ``uniform``)."""
    row = WEIGHTINGS[weighting]
    if row.x0_weight is None:
        return s.c_out.new_ones(s.c_out.shape)
    return row.x0_weight(s.alpha, s.sigma, sigma_data, gamma) * s.c_out**2
