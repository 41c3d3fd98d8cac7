"""The built-in guidance methods, each a :class:`sandbox.protocols.Guidance` on the estimate of ``x_0``.

All combine two estimates at one ``(x_t, t)``, a good one ``D_1`` and a
reference ``D_0``, as ``D_0 + w (D_1 - D_0)``, or (APG) a projection of that
update. At one noise level the estimates of ``x_0``, of epsilon and of v are
affine images of each other with the same coefficients, so the combination
is the same in any of them: classifier-free guidance here equals diffusers'
``ClassifierFreeGuidance`` on epsilon with ``guidance_scale = w``. Where a
method differs from diffusers' ``guiders`` it says so.

Each is limited to the noise levels ``sigma_low < sigma~ <= sigma_high``
(Kynkäänniemi et al. 2024, "Applying guidance in a limited interval improves
sample and distribution quality in diffusion models"); outside it the step
uses ``D_1`` alone and spends one network evaluation instead of two.
diffusers' ``start``/``stop`` are fractions of the sampler's steps instead,
which move with the step count; the interval here is a noise level, as in the
paper, so it means the same on every grid and schedule.
"""

from __future__ import annotations

from typing import Any, Union

import torch

from sandbox.protocols import Conditioned

Time = Union[float, torch.Tensor]


class IntervalGuidance:
    """``combine(model, x_t, t) -> guided x_0`` where the noise level lies in the interval, ``D_1`` elsewhere."""

    conditional = True

    def __init__(self, params: Any):
        self.params = params

    def __call__(self, model: Conditioned, x_t: torch.Tensor, t: Time) -> torch.Tensor:
        if self.params.scale == 1:  # D_0 + 1 (D_1 - D_0) = D_1: no second evaluation
            return self.plain(model, x_t, t)
        level = model.noise_level(t)
        inside = (level > self.params.sigma_low) & (level <= self.params.sigma_high)
        if not bool(inside.any()):
            return self.plain(model, x_t, t)
        guided, plain = self.combine(model, x_t, t)
        if bool(inside.all()):
            return guided
        mask = inside.to(x_t.device).reshape(-1, *([1] * (x_t.ndim - 1)))
        return torch.where(mask, guided, plain)

    def plain(self, model: Conditioned, x_t: torch.Tensor, t: Time) -> torch.Tensor:
        """``D_1``, the estimate guidance starts from."""
        return model.conditional(x_t, t)

    def combine(self, model: Conditioned, x_t: torch.Tensor, t: Time) -> tuple[torch.Tensor, torch.Tensor]:
        """``(guided, D_1)`` at ``(x_t, t)``."""
        raise NotImplementedError

    def both(self, model: Conditioned, x_t: torch.Tensor, t: Time) -> tuple[torch.Tensor, torch.Tensor]:
        """``(D_c, D_u)``: one forward on the doubled batch, or two. ``batched: null`` batches on a GPU only:
        on 2 CPU cores two passes of 256 digits ran 1.33 times as fast as one of 512
        (``benchmarks/test_bench_guidance.py``), where a GPU's one large batch is the faster."""
        batched = self.params.batched if self.params.batched is not None else x_t.device.type != "cpu"
        if batched:
            return model.both(x_t, t)
        return model.conditional(x_t, t), model.unconditional(x_t, t)


class ClassifierFree(IntervalGuidance):
    """Classifier-free guidance: ``D = D_u + w (D_c - D_u)`` (Ho & Salimans 2022, eq. 6, written for x_0).

    ``w = 1`` is plain conditional sampling (one evaluation per step), ``w = 0``
    unconditional sampling. With ``batched`` the two estimates come from one
    forward pass on the doubled batch (two network evaluations per item, one call).
    """

    def combine(self, model: Conditioned, x_t: torch.Tensor, t: Time) -> tuple[torch.Tensor, torch.Tensor]:
        cond, uncond = self.both(model, x_t, t)
        return uncond + self.params.scale * (cond - uncond), cond


class Autoguidance(IntervalGuidance):
    """Autoguidance: ``D = D_0 + w (D_1 - D_0)`` with ``D_0`` a weaker model of the same task (Karras et al.
    2024, "Guiding a diffusion model with a bad version of itself", eq. 2).

    ``D_1`` is the run's model (for each item's class in a conditional run),
    ``D_0`` the model that ``guide`` names: another, smaller or shorter-trained
    run, or an earlier checkpoint of the same run, as in the paper. It needs no
    class labels, so it guides unconditional models too. diffusers'
    ``AutoGuidance`` makes ``D_0`` by dropping layers of the same network
    instead; here it is a real weaker model. The two models differ, so the
    estimates take two forward passes.
    """

    conditional = False

    def combine(self, model: Conditioned, x_t: torch.Tensor, t: Time) -> tuple[torch.Tensor, torch.Tensor]:
        good, bad = model.conditional(x_t, t), model.guide(x_t, t)
        return bad + self.params.scale * (good - bad), good


class AdaptiveProjected(IntervalGuidance):
    """Adaptive projected guidance (Sadat et al. 2024, "Eliminating oversaturation and artifacts of high
    guidance scales in diffusion models", Algorithm 1), on the estimate of ``x_0`` as the paper recommends.

    With ``Delta = D_c - D_u``: reverse momentum ``Delta <- Delta + beta Delta_prev`` (running over the
    steps of one batch), rescaling ``Delta <- Delta min(1, r / ||Delta||)`` per item, and the split of
    ``Delta`` into its parts parallel and orthogonal to ``D_c``; then
    ``D = D_c + (w - 1) (Delta_orth + eta Delta_par)``. With ``eta = 1``, ``r = 0`` and ``beta = 0`` this is
    classifier-free guidance with the same ``w``. diffusers' ``AdaptiveProjectedGuidance`` starts from
    ``D_u`` with ``w`` instead (``D_u + w (Delta_orth + eta Delta_par)``), which agrees with the paper's
    form only at ``eta = 1``; this one follows the paper.
    """

    def combine(self, model: Conditioned, x_t: torch.Tensor, t: Time) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.params
        cond, uncond = self.both(model, x_t, t)
        delta = (cond - uncond).double()
        if p.momentum:
            state = getattr(model, "state", None)
            if isinstance(state, dict):
                previous = state.get("apg_momentum")
                delta = delta + p.momentum * previous if previous is not None else delta
                state["apg_momentum"] = delta
        dims = tuple(range(1, delta.ndim))
        if p.norm_threshold > 0:
            norm = delta.norm(dim=dims, keepdim=True)
            delta = delta * torch.clamp(p.norm_threshold / norm.clamp(min=1e-30), max=1.0)
        unit = torch.nn.functional.normalize(cond.double().flatten(1), dim=1).reshape(cond.shape)
        parallel = (delta * unit).sum(dim=dims, keepdim=True) * unit
        update = (delta - parallel) + p.eta * parallel
        return (cond.double() + (p.scale - 1) * update).to(cond.dtype), cond
