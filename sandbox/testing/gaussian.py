"""The Gaussian every sampler must recover with its exact denoiser, and that denoiser."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from sandbox.sampling import CountingDenoise
from sandbox.testing.build import expect

# fmt: off
GAUSSIAN_MEAN = (1.0, -0.5)  # the target N(mu, s^2 I) samplers must recover with its exact denoiser
GAUSSIAN_STD = 0.5
GAUSSIAN_SAMPLES = 4000      # standard error of the mean 0.008, of the std 0.006
GAUSSIAN_ATOL = 0.05
# fmt: on


def gaussian_denoiser(schedule: Any, mu: torch.Tensor, s: float) -> Callable[[torch.Tensor, Any], torch.Tensor]:
    """Exact ``E[x_0 | x_t]`` for ``x_0 ~ N(mu, s^2 I)``: ``mu + alpha s^2 / (alpha^2 s^2 + sigma^2) (x_t - alpha mu)``
    (a Gaussian's posterior mean).

    ``t`` may be a number, a 0-d tensor or one time per sample.
    """

    def denoise(x: torch.Tensor, t: Any) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        alpha, sigma = schedule.alpha_sigma(t)
        shape = (-1,) + (1,) * (x.ndim - 1)
        alpha = alpha.to(torch.float64).reshape(shape)
        sigma = sigma.to(torch.float64).reshape(shape)
        gain = alpha * s**2 / (alpha**2 * s**2 + sigma**2)
        return (mu + gain * (x.to(torch.float64) - alpha * mu)).to(x.dtype)

    return denoise


def likely_cause(schedule: Any) -> str:
    """A hint for a sampler that misses the Gaussian on ``schedule``, where the schedule itself explains it."""
    ts = torch.as_tensor(schedule.timesteps(50), dtype=torch.float64)
    alpha, sigma = (float(v) for v in schedule.alpha_sigma(ts[:1]))
    if alpha > 0.1 * sigma:
        return (
            f" Likely cause: the schedule never reaches pure noise: at its first time t = {float(ts[0]):g}, "
            f"alpha = {alpha:.3g} against sigma = {sigma:.3g}, so samplers start far from the data's "
            "marginal; alpha(1) should be near 0 (or sigma(1) >> 1 for a variance-exploding schedule)."
        )
    return ""


def gaussian_run(
    sampler: Any, schedule: Any, label: str, *, generator_seed: int = 1, global_seed: int = 123
) -> tuple[torch.Tensor, CountingDenoise, list[Any]]:
    """Sample N(mu, s^2 I) with its exact denoiser; check the calling convention and the result."""
    mu = torch.tensor(GAUSSIAN_MEAN)
    noise = torch.randn(GAUSSIAN_SAMPLES, len(GAUSSIAN_MEAN), generator=torch.Generator().manual_seed(0))
    original = noise.clone()
    counter = CountingDenoise(gaussian_denoiser(schedule, mu, GAUSSIAN_STD))
    seen: list[Any] = []

    def callback(info: Any) -> None:  # keep shapes, not tensors: a thousand steps add up
        if isinstance(info, dict):
            info = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else v for k, v in info.items()}
        seen.append(info)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(global_seed)
        try:
            out = sampler(
                counter, noise, schedule, generator=torch.Generator().manual_seed(generator_seed), callback=callback
            )
        except Exception as exc:
            raise AssertionError(
                f"{label}: sampler(denoise, noise, schedule, generator=..., callback=...) "
                f"raised {type(exc).__name__}: {exc}"
            ) from exc
    expect(
        isinstance(out, torch.Tensor) and out.shape == noise.shape,
        label,
        f"returned {type(out).__name__} of shape {tuple(getattr(out, 'shape', ()))}; expected a tensor of "
        f"the noise's shape {tuple(noise.shape)}",
    )
    expect(bool(torch.isfinite(out).all()), label, "returned non-finite samples")
    expect(torch.equal(noise, original), label, "changed the noise tensor in place")
    mean, std = out.mean(0), out.std(0)
    steps = f"{sampler.nfe(schedule)} denoise calls" if callable(getattr(sampler, "nfe", None)) else "its defaults"
    expect(
        torch.allclose(mean, mu, atol=GAUSSIAN_ATOL)
        and torch.allclose(std, torch.full_like(std, GAUSSIAN_STD), atol=GAUSSIAN_ATOL),
        label,
        f"with the exact denoiser of N({list(GAUSSIAN_MEAN)}, {GAUSSIAN_STD}^2 I) and {steps}, "
        f"{GAUSSIAN_SAMPLES} samples have mean {[round(v, 3) for v in mean.tolist()]} and std "
        f"{[round(v, 3) for v in std.tolist()]} (tolerance {GAUSSIAN_ATOL} on each).{likely_cause(schedule)}",
    )
    return out, counter, seen
