"""The sigmoid schedule of Jabri et al. (2022), "Scalable Adaptive Computation
for Iterative Generation" (RIN), in the form of Algorithm 1 of Chen (2023),
"On the Importance of Noise Scheduling for Diffusion Models".

Defaults are Algorithm 1's (start -3, end 3, tau 1); Chen's experiments favour
sharper or shifted settings at high resolution (e.g. start 0, end 3, tau 0.9),
which are one recipe override away.
"""

from __future__ import annotations

import torch

from sandbox.schedule import Schedule


class SigmoidSchedule(Schedule):
    """Continuous-time variance preserving: ``alpha = sqrt(alpha_bar)``, ``sigma = sqrt(1 - alpha_bar)``.

    ``alpha_bar(t) = (v_end - sigmoid((t (end - start) + start) / tau)) / (v_end - v_start)``
    with ``v_x = sigmoid(x / tau)``, clipped to ``[clip_min, 1]`` so that
    ``alpha(1) = sqrt(clip_min) > 0`` (samplers divide by alpha).
    """

    def __init__(self, start: float, end: float, tau: float, clip_min: float):
        self.start, self.end, self.tau, self.clip_min = start, end, tau, clip_min
        self.v_start = torch.sigmoid(torch.tensor(start / tau, dtype=torch.float64))
        self.v_end = torch.sigmoid(torch.tensor(end / tau, dtype=torch.float64))

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """Algorithm 1 of Chen (2023), in float64."""
        t = torch.as_tensor(t).to(torch.float64)
        v = torch.sigmoid((t * (self.end - self.start) + self.start) / self.tau)
        return ((self.v_end - v) / (self.v_end - self.v_start)).clamp(self.clip_min, 1.0)

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.as_tensor(t)
        dtype = t.dtype if t.is_floating_point() else torch.float32
        alpha_bar = self.alpha_bar(t.cpu())
        return (alpha_bar.sqrt().to(t.device, dtype), (1.0 - alpha_bar).sqrt().to(t.device, dtype))

    def t_from_log_snr(self, lambda_: torch.Tensor) -> torch.Tensor:
        """Closed form: ``alpha_bar = sigmoid(lambda_)``, then Algorithm 1 solved for t, clamped to [0, 1]."""
        alpha_bar = torch.sigmoid(torch.as_tensor(lambda_, dtype=torch.float64))
        v = self.v_end - alpha_bar * (self.v_end - self.v_start)
        t = (self.tau * torch.logit(v) - self.start) / (self.end - self.start)
        return t.nan_to_num(nan=1.0).clamp(0.0, 1.0)


def build(params) -> SigmoidSchedule:
    return SigmoidSchedule(params.start, params.end, params.tau, params.clip_min)
