"""``check_grid``: a time grid against :class:`sandbox.protocols.Grid`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from sandbox.registry import Registry, get_registry, use_registry
from sandbox.sampling import CountingDenoise
from sandbox.testing.build import built, built_all, built_in, expect
from sandbox.testing.gaussian import (
    GAUSSIAN_MEAN,
    GAUSSIAN_STD,
    gaussian_denoiser,
)

GRID_STEPS = (1, 2, 3, 7, 50, 1000)


def check_grid(
    grid: Any,
    params: Any = None,
    *,
    registry: Registry | None = None,
    schedules: Sequence[str] | None = None,
    samplers: Sequence[str] | None = None,
) -> Any:
    """Check a time grid (a registered name or a built callable) on registered schedules (default: the
    built-in ones) and, when it is registered, with the registered samplers that take a ``grid`` (default:
    the built-in ones; ``[]`` skips sampling)."""
    name = grid if isinstance(grid, str) else None
    grid, label = built("grid", grid, params, registry)
    expect(callable(grid), label, f"build(params) returned {type(grid).__name__}; expected grid(schedule, steps)")
    runs = built_all("schedule", registry, schedules)
    for schedule_name, schedule in runs:
        where = f"{label} on schedule '{schedule_name}'"
        for steps in GRID_STEPS:
            ts = grid(schedule, steps)
            expect(
                isinstance(ts, torch.Tensor) and ts.ndim == 1 and ts.is_floating_point() and 2 <= len(ts) <= steps + 1,
                where,
                f"grid(schedule, {steps}) returned {type(ts).__name__} of shape {tuple(getattr(ts, 'shape', ()))}; "
                f"expected a 1-D float tensor of 2 to {steps + 1} times",
            )
            ts = ts.to(torch.float64)
            expect(
                float(ts[0]) <= 1.0 and float(ts[-1]) == 0.0 and bool((ts[1:] < ts[:-1]).all()),
                where,
                f"grid(schedule, {steps}) must strictly descend from at most 1 to exactly 0; got "
                f"{[round(t, 6) for t in ts.tolist()[:6]]}...",
            )
            expect(torch.equal(ts, grid(schedule, steps).to(torch.float64)), where, "two calls gave two grids")
    if name is not None:
        registry = registry or get_registry()
        for sampler_name in built_in(registry, "sampler") if samplers is None else samplers:
            component = registry.get("sampler", sampler_name)
            fields = {f.name for f in dataclasses.fields(component.params)} if component.params else set()
            if "grid" not in fields:
                continue
            sampler_params = dataclasses.replace(
                component.default_params(), grid=name, **({"steps": 5} if "steps" in fields else {})
            )
            with use_registry(registry):
                sampler = component.build(sampler_params)
            for schedule_name, schedule in runs:
                where = f"{label} with sampler '{sampler_name}' on schedule '{schedule_name}'"
                counter = CountingDenoise(gaussian_denoiser(schedule, torch.tensor(GAUSSIAN_MEAN), GAUSSIAN_STD))
                out = sampler(counter, torch.randn(16, 2), schedule, generator=torch.Generator().manual_seed(0))
                expect(bool(torch.isfinite(out).all()), where, "non-finite samples")
                expect(
                    counter.nfe == sampler.nfe(schedule),
                    where,
                    f"made {counter.nfe} denoise calls but nfe(schedule) says {sampler.nfe(schedule)}",
                )
    return grid
