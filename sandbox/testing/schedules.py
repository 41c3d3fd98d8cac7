"""``check_schedule``: a schedule against :class:`sandbox.protocols.Schedule`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from sandbox.registry import Registry
from sandbox.testing.build import built, built_all, expect
from sandbox.testing.gaussian import (
    gaussian_run,
)


def check_schedule(
    schedule: Any, params: Any = None, *, registry: Registry | None = None, samplers: Sequence[str] | None = None
) -> Any:
    """Check a schedule (a registered name or a built :class:`sandbox.schedule.Schedule`).

    ``samplers`` names the registered samplers to sample with (default: the
    built-in ones, so an unrelated sampler plugin cannot fail a schedule's
    tests; ``[]`` skips sampling).
    """
    schedule, label = built("schedule", schedule, params, registry)
    for dtype in (torch.float32, torch.float64):
        t = torch.linspace(0.0, 1.0, 101, dtype=dtype)
        alpha, sigma = schedule.alpha_sigma(t)
        for name, value in (("alpha", alpha), ("sigma", sigma)):
            expect(
                isinstance(value, torch.Tensor) and value.shape == t.shape and value.is_floating_point(),
                label,
                f"alpha_sigma(t) of shape {tuple(t.shape)} returned {name} of shape "
                f"{tuple(getattr(value, 'shape', ()))}; expected floating tensors of t's shape",
            )
            expect(
                bool(torch.isfinite(value).all()) and bool((value >= 0).all()),
                label,
                f"{name}(t) must be finite and non-negative on [0, 1] ({t.dtype})",
            )
        expect(
            bool((sigma[1:] > 0).all()),
            label,
            f"sigma(t) must be positive for t > 0; it is 0 at t = {t[1:][sigma[1:] <= 0].tolist()[:3]}",
        )
        expect(
            bool((alpha[:-1] > 0).all()),
            label,
            f"alpha(t) must be positive for t < 1; it is 0 at t = {t[:-1][alpha[:-1] <= 0].tolist()[:3]}",
        )

    t = torch.linspace(0.0, 1.0, 1001, dtype=torch.float64)
    lam = schedule.log_snr(t).to(torch.float64)
    expect(
        lam.shape == t.shape and not bool(torch.isnan(lam).any()), label, "log_snr(t) must be a number for t in [0, 1]"
    )
    rising = lam[1:] > lam[:-1] + 1e-6 * (1 + lam[:-1].abs())
    expect(
        not bool(rising.any()),
        label,
        f"log_snr(t) must not increase with t; it rises after t = {t[:-1][rising].tolist()[:3]}",
    )
    inner = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    alpha, sigma = schedule.alpha_sigma(inner)
    direct = 2.0 * (torch.log(alpha.double()) - torch.log(sigma.double()))
    expect(
        torch.allclose(schedule.log_snr(inner).double(), direct, rtol=1e-3, atol=1e-3),
        label,
        "log_snr(t) disagrees with 2 log(alpha(t) / sigma(t))",
    )

    for steps in (1, 2, 7, 50, 1000):
        ts = schedule.timesteps(steps)
        expect(
            isinstance(ts, torch.Tensor) and ts.ndim == 1 and 2 <= len(ts) <= steps + 1,
            label,
            f"timesteps({steps}) must be a 1-D tensor of 2 to {steps + 1} times, got "
            f"{tuple(getattr(ts, 'shape', ()))}",
        )
        ts = ts.to(torch.float64)
        expect(
            abs(float(ts[0]) - 1.0) <= 1e-6 and float(ts[-1]) == 0.0,
            label,
            f"timesteps({steps}) must run from 1 to exactly 0, got {float(ts[0])} to {float(ts[-1])}",
        )
        expect(bool((ts[1:] < ts[:-1]).all()), label, f"timesteps({steps}) must strictly descend")

    draws = [schedule.sample_t(2048, generator=torch.Generator().manual_seed(0)) for _ in range(2)]
    expect(draws[0].shape == (2048,), label, f"sample_t(2048) returned shape {tuple(draws[0].shape)}")
    expect(bool(((draws[0] > 0) & (draws[0] <= 1)).all()), label, "sample_t must draw times in (0, 1]")
    expect(torch.equal(draws[0], draws[1]), label, "sample_t ignores its generator: one seed gave two draws")

    if callable(getattr(schedule, "t_from_log_snr", None)):
        try:
            back = schedule.t_from_log_snr(schedule.log_snr(inner))
        except NotImplementedError:
            back = None
        if back is not None:
            back = torch.as_tensor(back).to(torch.float64)
            expect(
                back.shape == inner.shape and bool(((back >= 0) & (back <= 1)).all()),
                label,
                "t_from_log_snr must return one time in [0, 1] per log-SNR",
            )
            expect(
                torch.allclose(
                    schedule.log_snr(back).double(), schedule.log_snr(inner).double(), rtol=1e-4, atol=1e-4
                ),
                label,
                "log_snr(t_from_log_snr(lambda)) != lambda: t_from_log_snr does not invert log_snr",
            )
            steep = (schedule.log_snr(inner - 1e-3).double() - schedule.log_snr(inner + 1e-3).double()) > 1e-6
            expect(
                torch.allclose(back[steep], inner[steep], atol=1e-4),
                label,
                "t_from_log_snr(log_snr(t)) != t where log_snr is strictly decreasing",
            )

    for name, sampler in built_all("sampler", registry, samplers):
        gaussian_run(sampler, schedule, f"{label} with sampler '{name}'")
    return schedule
