"""Exponential moving average of the weights, used for sampling."""

from __future__ import annotations

import copy

import torch


class EMA:
    """``theta_ema <- d theta_ema + (1 - d) theta`` with ``d = min(decay, (1 + n) / (10 + n))``.

    The warm-up on ``d`` (as in TensorFlow's ExponentialMovingAverage with
    ``num_updates``) keeps short runs from sampling with near-initial weights.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema: list[torch.Tensor] = list(self.model.parameters())
        src = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema, src, 1.0 - d)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "model": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.updates = state["updates"]
        self.model.load_state_dict(state["model"])
