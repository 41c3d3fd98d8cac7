"""A conformance kit: check your plugin's component against the sandbox's contracts.

Call the checks from your plugin's own tests, by registered name (the
component is built through the registry, as a recipe would build it) or on
an object you built yourself::

    from sandbox.testing import check_schedule

    def test_loglinear_conforms():
        check_schedule("loglinear")
        check_schedule("loglinear", LogLinearParams(lambda_min=-12.0))

The contracts themselves are stated in :mod:`sandbox.protocols`. Each
``check_*`` raises :class:`AssertionError` naming the component, the broken
rule, and the step count and tolerance it used, and returns the built
component when it conforms:

==================  ==========================================================
check               contract
==================  ==========================================================
``check_schedule``  ``alpha_sigma`` keeps ``t``'s shape, finite, non-negative,
                    ``sigma > 0`` for t > 0 and ``alpha > 0`` for t < 1;
                    ``log_snr`` non-increasing and equal to
                    ``2 log(alpha / sigma)``; ``timesteps(n)`` descends from 1
                    to exactly 0 in at most n + 1 points; ``sample_t`` in
                    (0, 1] and seeded by its generator; ``t_from_log_snr``
                    inverts ``log_snr``; every built-in sampler recovers a
                    Gaussian with its exact denoiser.
``check_sampler``   the signature of :class:`sandbox.protocols.Sampler`;
                    ``sampler(denoise, noise, schedule, *, generator,
                    callback)`` returns ``noise``'s shape, finite, leaves
                    ``noise`` alone; one callback dict ``{"x", "i", "t",
                    "denoised"}`` per step; same generator seed, same output
                    (whatever the global RNG); ``nfe(schedule)`` denoiser
                    calls; recovers a Gaussian on every built-in schedule.
``check_denoiser``  ``forward(x, c_noise)`` keeps ``x``'s shape, finite;
                    gradients reach every parameter within a few steps; the
                    output depends on ``c_noise``. An analytic denoiser
                    (:class:`sandbox.protocols.AnalyticDenoiser`) instead
                    binds to ``data`` and gives a finite ``E[x_0 | x_t]``.
``check_grid``      ``grid(schedule, steps)`` on every built-in schedule and a
                    range of steps: a 1-D float tensor of 2 to ``steps + 1``
                    strictly descending times, at most 1, the last exactly 0,
                    the same on a second call; every built-in sampler steps
                    on it with exactly ``nfe(schedule)`` denoiser calls.
``check_dataset``   ``build`` returns :class:`sandbox.protocols.DataSplits`;
                    non-empty splits of float items of ``shape``; ``render``
                    gives a [3, H, W] picture in [0, 1]; ``evaluate`` a dict
                    of finite floats.
==================  ==========================================================

Helpers for tests: :func:`gaussian_denoiser` (the exact ``E[x_0 | x_t]`` of a
Gaussian), :func:`register_plugin` (a throwaway plugin, always unregistered)
and :func:`fake_distribution` (an installed distribution faked through
``importlib.metadata.distributions``). This module imports torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any

import torch

from sandbox.contract import PROBLEMS, is_analytic
from sandbox.plugins import SELF_DISTRIBUTION
from sandbox.protocols import DataSplits, first_tensor
from sandbox.registry import Registry, get_registry, load_registry, use_registry
from sandbox.sampling import CountingDenoise

# fmt: off
CALLBACK_KEYS = frozenset({"x", "i", "t", "denoised"})
GAUSSIAN_MEAN = (1.0, -0.5)  # the target N(mu, s^2 I) samplers must recover with its exact denoiser
GAUSSIAN_STD = 0.5
GAUSSIAN_SAMPLES = 4000      # standard error of the mean 0.008, of the std 0.006
GAUSSIAN_ATOL = 0.05
# fmt: on


def _expect(condition: Any, label: str, message: str) -> None:
    if not condition:
        raise AssertionError(f"{label}: {message}")


def _built(kind: str, component: Any, params: Any, registry: Registry | None, *args: Any) -> tuple[Any, str]:
    """``(object, label)``: a registered name is built with ``params`` (default: its defaults)."""
    if not isinstance(component, str):
        return component, f"{kind} {type(component).__name__}"
    registered = (registry or get_registry()).get(kind, component)
    label = f"{kind} '{component}' ({registered.provider})"
    return registered.build(params if params is not None else registered.default_params(), *args), label


def build_component(kind: str, name: str, registry: Registry | None = None, *args: Any, **overrides: Any) -> Any:
    """The registered ``kind`` ``name`` built from its default parameters with ``overrides`` (checked again by
    its parameter dataclass), e.g. ``build_component("sampler", "unipc", steps=10, order=2)``; ``args`` go to
    ``build`` after the parameters (a denoiser's data shape)."""
    component = (registry or get_registry()).get(kind, name)
    params = component.default_params()
    if overrides:
        params = dataclasses.replace(params, **overrides)
    return component.build(params, *args)


def built_in(registry: Registry, kind: str) -> list[str]:
    """The names of ``kind`` the sandbox itself provides (a plugin's tests check against these by default)."""
    return [n for n in registry.names(kind) if registry.get(kind, n).distribution == SELF_DISTRIBUTION]


def _built_all(kind: str, registry: Registry | None, names: Sequence[str] | None) -> list[tuple[str, Any]]:
    registry = registry or get_registry()
    chosen = built_in(registry, kind) if names is None else names
    return [(name, registry.get(kind, name).build()) for name in chosen]


# ---------------------------------------------------------------- helpers


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


def _likely_cause(schedule: Any) -> str:
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


def _gaussian_run(
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
    _expect(
        isinstance(out, torch.Tensor) and out.shape == noise.shape,
        label,
        f"returned {type(out).__name__} of shape {tuple(getattr(out, 'shape', ()))}; expected a tensor of "
        f"the noise's shape {tuple(noise.shape)}",
    )
    _expect(bool(torch.isfinite(out).all()), label, "returned non-finite samples")
    _expect(torch.equal(noise, original), label, "changed the noise tensor in place")
    mean, std = out.mean(0), out.std(0)
    steps = f"{sampler.nfe(schedule)} denoise calls" if callable(getattr(sampler, "nfe", None)) else "its defaults"
    _expect(
        torch.allclose(mean, mu, atol=GAUSSIAN_ATOL)
        and torch.allclose(std, torch.full_like(std, GAUSSIAN_STD), atol=GAUSSIAN_ATOL),
        label,
        f"with the exact denoiser of N({list(GAUSSIAN_MEAN)}, {GAUSSIAN_STD}^2 I) and {steps}, "
        f"{GAUSSIAN_SAMPLES} samples have mean {[round(v, 3) for v in mean.tolist()]} and std "
        f"{[round(v, 3) for v in std.tolist()]} (tolerance {GAUSSIAN_ATOL} on each).{_likely_cause(schedule)}",
    )
    return out, counter, seen


# ---------------------------------------------------------------- schedules


def check_schedule(
    schedule: Any, params: Any = None, *, registry: Registry | None = None, samplers: Sequence[str] | None = None
) -> Any:
    """Check a schedule (a registered name or a built :class:`sandbox.schedule.Schedule`).

    ``samplers`` names the registered samplers to sample with (default: the
    built-in ones, so an unrelated sampler plugin cannot fail a schedule's
    tests; ``[]`` skips sampling).
    """
    schedule, label = _built("schedule", schedule, params, registry)
    for dtype in (torch.float32, torch.float64):
        t = torch.linspace(0.0, 1.0, 101, dtype=dtype)
        alpha, sigma = schedule.alpha_sigma(t)
        for name, value in (("alpha", alpha), ("sigma", sigma)):
            _expect(
                isinstance(value, torch.Tensor) and value.shape == t.shape and value.is_floating_point(),
                label,
                f"alpha_sigma(t) of shape {tuple(t.shape)} returned {name} of shape "
                f"{tuple(getattr(value, 'shape', ()))}; expected floating tensors of t's shape",
            )
            _expect(
                bool(torch.isfinite(value).all()) and bool((value >= 0).all()),
                label,
                f"{name}(t) must be finite and non-negative on [0, 1] ({t.dtype})",
            )
        _expect(
            bool((sigma[1:] > 0).all()),
            label,
            f"sigma(t) must be positive for t > 0; it is 0 at t = {t[1:][sigma[1:] <= 0].tolist()[:3]}",
        )
        _expect(
            bool((alpha[:-1] > 0).all()),
            label,
            f"alpha(t) must be positive for t < 1; it is 0 at t = {t[:-1][alpha[:-1] <= 0].tolist()[:3]}",
        )

    t = torch.linspace(0.0, 1.0, 1001, dtype=torch.float64)
    lam = schedule.log_snr(t).to(torch.float64)
    _expect(
        lam.shape == t.shape and not bool(torch.isnan(lam).any()), label, "log_snr(t) must be a number for t in [0, 1]"
    )
    rising = lam[1:] > lam[:-1] + 1e-6 * (1 + lam[:-1].abs())
    _expect(
        not bool(rising.any()),
        label,
        f"log_snr(t) must not increase with t; it rises after t = {t[:-1][rising].tolist()[:3]}",
    )
    inner = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    alpha, sigma = schedule.alpha_sigma(inner)
    direct = 2.0 * (torch.log(alpha.double()) - torch.log(sigma.double()))
    _expect(
        torch.allclose(schedule.log_snr(inner).double(), direct, rtol=1e-3, atol=1e-3),
        label,
        "log_snr(t) disagrees with 2 log(alpha(t) / sigma(t))",
    )

    for steps in (1, 2, 7, 50, 1000):
        ts = schedule.timesteps(steps)
        _expect(
            isinstance(ts, torch.Tensor) and ts.ndim == 1 and 2 <= len(ts) <= steps + 1,
            label,
            f"timesteps({steps}) must be a 1-D tensor of 2 to {steps + 1} times, got "
            f"{tuple(getattr(ts, 'shape', ()))}",
        )
        ts = ts.to(torch.float64)
        _expect(
            abs(float(ts[0]) - 1.0) <= 1e-6 and float(ts[-1]) == 0.0,
            label,
            f"timesteps({steps}) must run from 1 to exactly 0, got {float(ts[0])} to {float(ts[-1])}",
        )
        _expect(bool((ts[1:] < ts[:-1]).all()), label, f"timesteps({steps}) must strictly descend")

    draws = [schedule.sample_t(2048, generator=torch.Generator().manual_seed(0)) for _ in range(2)]
    _expect(draws[0].shape == (2048,), label, f"sample_t(2048) returned shape {tuple(draws[0].shape)}")
    _expect(bool(((draws[0] > 0) & (draws[0] <= 1)).all()), label, "sample_t must draw times in (0, 1]")
    _expect(torch.equal(draws[0], draws[1]), label, "sample_t ignores its generator: one seed gave two draws")

    if callable(getattr(schedule, "t_from_log_snr", None)):
        try:
            back = schedule.t_from_log_snr(schedule.log_snr(inner))
        except NotImplementedError:
            back = None
        if back is not None:
            back = torch.as_tensor(back).to(torch.float64)
            _expect(
                back.shape == inner.shape and bool(((back >= 0) & (back <= 1)).all()),
                label,
                "t_from_log_snr must return one time in [0, 1] per log-SNR",
            )
            _expect(
                torch.allclose(
                    schedule.log_snr(back).double(), schedule.log_snr(inner).double(), rtol=1e-4, atol=1e-4
                ),
                label,
                "log_snr(t_from_log_snr(lambda)) != lambda: t_from_log_snr does not invert log_snr",
            )
            steep = (schedule.log_snr(inner - 1e-3).double() - schedule.log_snr(inner + 1e-3).double()) > 1e-6
            _expect(
                torch.allclose(back[steep], inner[steep], atol=1e-4),
                label,
                "t_from_log_snr(log_snr(t)) != t where log_snr is strictly decreasing",
            )

    for name, sampler in _built_all("sampler", registry, samplers):
        _gaussian_run(sampler, schedule, f"{label} with sampler '{name}'")
    return schedule


# ---------------------------------------------------------------- samplers


def check_sampler(
    sampler: Any, params: Any = None, *, registry: Registry | None = None, schedules: Sequence[str] | None = None
) -> Any:
    """Check a sampler (a registered name or a built callable) on registered schedules (default: the built-in ones)."""
    sampler, label = _built("sampler", sampler, params, registry)
    problems = PROBLEMS["sampler"](sampler)
    _expect(not problems, label, "; ".join(problems))
    runs = _built_all("schedule", registry, schedules)
    _expect(runs, label, "no schedule to check against")
    for index, (schedule_name, schedule) in enumerate(runs):
        where = f"{label} on schedule '{schedule_name}'"
        out, counter, seen = _gaussian_run(sampler, schedule, where)
        _expect(seen, where, "never called the callback; expected one dict per step")
        for info in seen:
            _expect(
                isinstance(info, dict) and set(info) >= CALLBACK_KEYS,
                where,
                f"callback got {sorted(info) if isinstance(info, dict) else type(info).__name__}; expected "
                f"a dict with keys {sorted(CALLBACK_KEYS)}",
            )
            _expect(
                info["x"] == tuple(out.shape) and info["denoised"] == tuple(out.shape),
                where,
                "callback's 'x' and 'denoised' must have the samples' shape",
            )
        _expect(
            [info["i"] for info in seen] == list(range(len(seen))),
            where,
            f"callback steps 'i' must count 0, 1, 2, ...; got {[info['i'] for info in seen][:8]}",
        )
        _expect(
            counter.nfe == sampler.nfe(schedule),
            where,
            f"made {counter.nfe} denoise calls but nfe(schedule) says {sampler.nfe(schedule)}",
        )
        if index == 0:  # the generator, not the global RNG, drives every draw
            again, _, _ = _gaussian_run(sampler, schedule, where, global_seed=456)
            _expect(
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
            _expect(bool(torch.isfinite(plain).all()), where, "non-finite samples without a generator")
    return sampler


# ---------------------------------------------------------------- time grids

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
    grid, label = _built("grid", grid, params, registry)
    _expect(callable(grid), label, f"build(params) returned {type(grid).__name__}; expected grid(schedule, steps)")
    runs = _built_all("schedule", registry, schedules)
    for schedule_name, schedule in runs:
        where = f"{label} on schedule '{schedule_name}'"
        for steps in GRID_STEPS:
            ts = grid(schedule, steps)
            _expect(
                isinstance(ts, torch.Tensor) and ts.ndim == 1 and ts.is_floating_point() and 2 <= len(ts) <= steps + 1,
                where,
                f"grid(schedule, {steps}) returned {type(ts).__name__} of shape {tuple(getattr(ts, 'shape', ()))}; "
                f"expected a 1-D float tensor of 2 to {steps + 1} times",
            )
            ts = ts.to(torch.float64)
            _expect(
                float(ts[0]) <= 1.0 and float(ts[-1]) == 0.0 and bool((ts[1:] < ts[:-1]).all()),
                where,
                f"grid(schedule, {steps}) must strictly descend from at most 1 to exactly 0; got "
                f"{[round(t, 6) for t in ts.tolist()[:6]]}...",
            )
            _expect(torch.equal(ts, grid(schedule, steps).to(torch.float64)), where, "two calls gave two grids")
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
                _expect(bool(torch.isfinite(out).all()), where, "non-finite samples")
                _expect(
                    counter.nfe == sampler.nfe(schedule),
                    where,
                    f"made {counter.nfe} denoise calls but nfe(schedule) says {sampler.nfe(schedule)}",
                )
    return grid


# ---------------------------------------------------------------- denoisers


def check_denoiser(
    denoiser: Any,
    shape: Sequence[int],
    params: Any = None,
    *,
    registry: Registry | None = None,
    batch: int = 2,
    data: DataSplits | None = None,
    steps: int = 4,
) -> Any:
    """Check a denoiser (a registered name, built for ``shape``, or a built object).

    A network is trained a few steps; an analytic denoiser
    (:class:`sandbox.protocols.AnalyticDenoiser`) is bound to ``data`` (when
    given) and its exact ``E[x_0 | x_t]`` checked.
    """
    shape = tuple(int(s) for s in shape)
    net, label = _built("denoiser", denoiser, params, registry, shape)
    problems = PROBLEMS["denoiser"](net)
    _expect(not problems, label, "; ".join(problems))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        x = torch.randn(batch, *shape)
        if is_analytic(net):
            if data is not None:
                alpha = torch.full((batch,) + (1,) * len(shape), 0.8)
                out = net.bind(data)(x, alpha, (1 - alpha**2).sqrt())
                _expect(
                    out.shape == x.shape and bool(torch.isfinite(out).all()),
                    label,
                    "bind(data)(x_t, alpha, sigma) must be finite and keep x_t's shape",
                )
            return net
        c_noise = torch.linspace(50.0, 800.0, batch)
        out = net(x, c_noise)
        _expect(
            isinstance(out, torch.Tensor) and out.shape == x.shape,
            label,
            f"forward(x, c_noise) on x of shape {tuple(x.shape)} returned shape "
            f"{tuple(getattr(out, 'shape', ()))}; expected x's shape",
        )
        _expect(
            out.dtype == x.dtype and bool(torch.isfinite(out).all()),
            label,
            f"forward must return finite {x.dtype} values",
        )
        trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
        _expect(trainable, label, "has no trainable parameters")
        # Zero-initialised output layers (as in DDPM) pass no gradient on the first step: allow a few.
        target = torch.randn_like(x)
        opt = torch.optim.Adam([p for _, p in trainable], lr=1e-3)
        reached = {n: False for n, _ in trainable}
        for _ in range(steps):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(net(x, c_noise), target)
            _expect(math.isfinite(loss.item()), label, "the training loss became non-finite")
            loss.backward()
            for n, p in trainable:
                reached[n] |= p.grad is not None and bool(p.grad.abs().sum() > 0)
            opt.step()
        missing = [n for n, r in reached.items() if not r]
        _expect(not missing, label, f"no gradient reached {missing[:5]} in {steps} steps")
        net.eval()
        with torch.no_grad():
            a, b = net(x, c_noise), net(x, c_noise + 250.0)
        _expect(not torch.allclose(a, b), label, "the output does not depend on c_noise (the noise level)")
        net.train()
    return net


# ---------------------------------------------------------------- datasets


def check_dataset(
    dataset: Any, params: Any = None, *, registry: Registry | None = None, items: int = 4, evaluate: bool = True
) -> DataSplits:
    """Check a dataset (a registered name or built :class:`DataSplits`); ``evaluate=False`` skips scoring."""
    splits, label = _built("dataset", dataset, params, registry)
    _expect(
        isinstance(splits, DataSplits),
        label,
        f"build(params) returned {type(splits).__name__}; expected sandbox.protocols.DataSplits",
    )
    shape = splits.shape
    _expect(
        isinstance(shape, tuple) and shape and all(isinstance(s, int) and s > 0 for s in shape),
        label,
        f"shape {shape!r} must be a tuple of positive ints",
    )
    for split_name in ("train", "val"):
        split = getattr(splits, split_name)
        _expect(len(split) > 0, label, f"the {split_name} split is empty")
        for i in range(min(items, len(split))):
            item = first_tensor(split[i])
            _expect(
                isinstance(item, torch.Tensor) and item.is_floating_point(),
                label,
                f"{split_name}[{i}] is {type(item).__name__}; expected a float tensor (or a tuple starting with one)",
            )
            _expect(
                tuple(item.shape) == shape, label, f"{split_name}[{i}] has shape {tuple(item.shape)}; expected {shape}"
            )
            _expect(bool(torch.isfinite(item).all()), label, f"{split_name}[{i}] is not finite")
    batch = torch.stack([first_tensor(splits.val[i]) for i in range(min(64, len(splits.val)))]).float()
    if splits.render is not None:
        picture = splits.render(batch[:16])
        _expect(
            isinstance(picture, torch.Tensor) and picture.ndim == 3 and picture.shape[0] == 3,
            label,
            f"render(samples) returned {tuple(getattr(picture, 'shape', ()))}; expected a [3, H, W] tensor",
        )
        _expect(bool((picture >= 0).all() and (picture <= 1).all()), label, "render(samples) must lie in [0, 1]")
    if splits.evaluate is not None and evaluate:
        scores = splits.evaluate(batch)
        _expect(isinstance(scores, dict) and scores, label, "evaluate(samples) must return a non-empty dict")
        for key, value in scores.items():
            _expect(
                isinstance(key, str)
                and isinstance(value, (int, float))
                and not isinstance(value, bool)
                and math.isfinite(value),
                label,
                f"evaluate(samples)[{key!r}] = {value!r}; expected a finite float",
            )
    if splits.exact_x0 is not None:
        alpha = torch.full((len(batch),) + (1,) * len(shape), 0.8)
        out = splits.exact_x0(batch, alpha, (1 - alpha**2).sqrt())
        _expect(
            isinstance(out, torch.Tensor) and out.shape == batch.shape and bool(torch.isfinite(out).all()),
            label,
            "exact_x0(x_t, alpha, sigma) must be finite and keep x_t's shape",
        )
    return splits


# ---------------------------------------------------------------- throwaway plugins


@contextlib.contextmanager
def register_plugin(plugin: Any, name: str = "throwaway-plugin") -> Iterator[Registry]:
    """A registry of the installed plugins plus ``plugin`` (a module or an object with hook methods).

    Inside the block :func:`sandbox.registry.get_registry` returns it too
    (:func:`sandbox.registry.use_registry`), so code under test
    (``sandbox.cli.main``, ``load_recipe``) sees the plugin; afterwards it is gone::

        with register_plugin(MyPlugin()) as registry:
            check_sampler("mine", registry=registry)
    """
    with use_registry(load_registry({name: plugin})) as registry:
        yield registry


class _FakeDistribution:
    """Just enough of :class:`importlib.metadata.Distribution` for entry-point loading."""

    def __init__(self, name: str, version: str, entry_points: list[importlib.metadata.EntryPoint]):
        self.metadata = {"Name": name}
        self.version = version
        self.entry_points = entry_points


@contextlib.contextmanager
def fake_distribution(
    name: str, version: str, entry_points: dict[str, str], modules: dict[str, ModuleType] | None = None
) -> Iterator[None]:
    """Pretend distribution ``name`` is installed, with ``sandbox`` entry points ``{entry name: module}``.

    ``modules`` are put in ``sys.modules`` for the block (an entry point may
    also name a module that does not exist, to test a failing import). Inside
    the block :func:`sandbox.registry.get_registry` is the registry loaded with it.
    """
    eps = [importlib.metadata.EntryPoint(name=n, value=v, group="sandbox") for n, v in entry_points.items()]
    real = importlib.metadata.distributions
    saved_modules = {m: sys.modules.get(m) for m in (modules or {})}

    def distributions(**kwargs: Any) -> Iterator[Any]:
        yield from real(**kwargs)
        yield _FakeDistribution(name, version, eps)

    importlib.metadata.distributions = distributions
    sys.modules.update(modules or {})
    try:
        with use_registry(load_registry()):
            yield
    finally:
        importlib.metadata.distributions = real
        for module_name, module in saved_modules.items():
            if module is None:
                sys.modules.pop(module_name, None)
            else:
                sys.modules[module_name] = module
