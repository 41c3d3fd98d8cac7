"""``check_sampler``: a sampler against :class:`sandbox.protocols.Sampler`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from sandbox.contract import PROBLEMS
from sandbox.registry import Registry
from sandbox.testing.build import built, built_all, expect
from sandbox.testing.gaussian import (
    GAUSSIAN_MEAN,
    GAUSSIAN_STD,
    gaussian_denoiser,
    gaussian_run,
)

CALLBACK_KEYS = frozenset({"x", "i", "t", "denoised"})


def check_sampler(
    sampler: Any, params: Any = None, *, registry: Registry | None = None, schedules: Sequence[str] | None = None
) -> Any:
    """Check a sampler (a registered name or a built callable) on registered schedules (default: the built-in ones)."""
    sampler, label = built("sampler", sampler, params, registry)
    problems = PROBLEMS["sampler"](sampler)
    expect(not problems, label, "; ".join(problems))
    runs = built_all("schedule", registry, schedules)
    expect(runs, label, "no schedule to check against")
    for index, (schedule_name, schedule) in enumerate(runs):
        where = f"{label} on schedule '{schedule_name}'"
        out, counter, seen = gaussian_run(sampler, schedule, where)
        expect(seen, where, "never called the callback; expected one dict per step")
        for info in seen:
            expect(
                isinstance(info, dict) and set(info) >= CALLBACK_KEYS,
                where,
                f"callback got {sorted(info) if isinstance(info, dict) else type(info).__name__}; expected "
                f"a dict with keys {sorted(CALLBACK_KEYS)}",
            )
            expect(
                info["x"] == tuple(out.shape) and info["denoised"] == tuple(out.shape),
                where,
                "callback's 'x' and 'denoised' must have the samples' shape",
            )
        expect(
            [info["i"] for info in seen] == list(range(len(seen))),
            where,
            f"callback steps 'i' must count 0, 1, 2, ...; got {[info['i'] for info in seen][:8]}",
        )
        expect(
            counter.nfe == sampler.nfe(schedule),
            where,
            f"made {counter.nfe} denoise calls but nfe(schedule) says {sampler.nfe(schedule)}",
        )
        if index == 0:  # the generator, not the global RNG, drives every draw
            again, _, _ = gaussian_run(sampler, schedule, where, global_seed=456)
            expect(
                torch.allclose(out, again, rtol=0, atol=1e-6),
                where,
                "does not honour its generator: the same generator seed gave different samples when the "
                "global RNG changed (draw noise with torch.randn(..., generator=generator))",
            )
            with torch.random.fork_rng(devices=[]):
                try:
                    plain = sampler(
                        gaussian_denoiser(schedule, torch.tensor(GAUSSIAN_MEAN), GAUSSIAN_STD),
                        torch.randn(8, len(GAUSSIAN_MEAN)),
                        schedule,
                    )
                except Exception as exc:
                    raise AssertionError(
                        f"{where}: sampler(denoise, noise, schedule) without generator and "
                        f"callback raised {type(exc).__name__}: {exc}"
                    ) from exc
            expect(bool(torch.isfinite(plain).all()), where, "non-finite samples without a generator")
    return sampler
