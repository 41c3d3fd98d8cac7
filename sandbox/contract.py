"""Checks that a built component has the shape its kind's protocol (:mod:`sandbox.protocols`) asks for.

The engine runs them right after ``build``, before any training, so a
sampler without the ``generator`` keyword or a network whose ``forward``
takes one argument stops with a message naming the plugin instead of a
traceback hours later. :mod:`sandbox.testing` runs the same checks.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from sandbox.protocols import AnalyticDenoiser, DataSplits

SAMPLER_CALL = "sampler(denoise, noise, schedule, *, generator=None, callback=None)"


def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check
        return None


def accepts(fn: Callable[..., Any], positional: int, keywords: tuple[str, ...] = ()) -> list[str]:
    """What ``fn`` cannot take of ``positional`` positional arguments and the ``keywords``; empty when it can."""
    signature = _signature(fn)
    if signature is None:
        return []
    params = list(signature.parameters.values())
    problems = []
    if not any(p.kind is p.VAR_POSITIONAL for p in params):
        slots = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        required = [p for p in slots if p.default is p.empty]
        if len(slots) < positional:
            problems.append(f"takes {len(slots)} positional argument{'s' * (len(slots) != 1)}, not {positional}")
        elif len(required) > positional:
            problems.append(f"requires {len(required)} positional arguments, not {positional}")
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        problems += [f"has no keyword '{k}'" for k in keywords if k not in names]
    return problems


def dataset_problems(data: Any) -> list[str]:
    if not isinstance(data, DataSplits):
        return [f"build(params) returned {type(data).__name__}; expected sandbox.protocols.DataSplits"]
    if len(data.train) == 0 or len(data.val) == 0:
        return ["has an empty train or validation split"]
    return []


def schedule_problems(schedule: Any) -> list[str]:
    if not callable(getattr(schedule, "alpha_sigma", None)):
        return [
            f"build(params) returned {type(schedule).__name__} without alpha_sigma(t); expected a "
            "sandbox.protocols.Schedule"
        ]
    missing = [
        m
        for m in ("log_snr", "t_from_log_snr", "c_noise", "timesteps", "sample_t")
        if not callable(getattr(schedule, m, None))
    ]
    return (
        [f"has no {', '.join(missing)}: subclass sandbox.protocols.Schedule to inherit the defaults"]
        if missing
        else []
    )


def is_analytic(denoiser: Any) -> bool:
    """Whether a built denoiser is an :class:`AnalyticDenoiser` (exact, untrained) rather than a network."""
    return isinstance(denoiser, AnalyticDenoiser) and not isinstance(denoiser, torch.nn.Module)


def denoiser_problems(net: Any) -> list[str]:
    if is_analytic(net):
        return [f"bind(data) {p}" for p in accepts(net.bind, 1)]
    if not isinstance(net, torch.nn.Module):
        return [
            f"build(params, shape) returned {type(net).__name__}; expected a torch.nn.Module with "
            "forward(x, c_noise) or an analytic denoiser with bind(data)"
        ]
    return [f"forward(x, c_noise) {p}" for p in accepts(net.forward, 2)]


def conditional_denoiser_problems(net: Any) -> list[str]:
    """What a network built with ``num_classes`` lacks to be called ``forward(x, c_noise, class_labels)``."""
    if is_analytic(net) or not isinstance(net, torch.nn.Module):
        return []
    return [f"forward(x, c_noise, class_labels) {p}" for p in accepts(net.forward, 3)]


def takes_classes(build: Callable[..., Any]) -> bool:
    """Whether a denoiser's ``build`` can be called ``build(params, shape, num_classes=K)``."""
    return not accepts(build, 2, ("num_classes",))


def guidance_problems(guidance: Any) -> list[str]:
    if not callable(guidance):
        return [
            f"build(params) returned {type(guidance).__name__}, which is not callable; expected "
            "guidance(model, x_t, t) (sandbox.protocols.Guidance)"
        ]
    problems = [f"{p}; expected guidance(model, x_t, t)" for p in accepts(guidance, 3)]
    if not isinstance(getattr(guidance, "conditional", None), bool):
        problems.append("has no boolean attribute 'conditional' (whether it needs a class-conditional model)")
    return problems


def sampler_problems(sampler: Any) -> list[str]:
    if not callable(sampler):
        return [f"build(params) returned {type(sampler).__name__}, which is not callable; expected {SAMPLER_CALL}"]
    problems = [f"{p}; expected {SAMPLER_CALL}" for p in accepts(sampler, 3, ("generator", "callback"))]
    if not callable(getattr(sampler, "nfe", None)):
        problems.append("has no nfe(schedule) method (the number of denoise calls per sample)")
    elif problem := accepts(sampler.nfe, 1):
        problems.append(f"nfe(schedule) {problem[0]}")
    return problems


PROBLEMS: dict[str, Callable[[Any], list[str]]] = {
    "dataset": dataset_problems,
    "schedule": schedule_problems,
    "denoiser": denoiser_problems,
    "sampler": sampler_problems,
    "guidance": guidance_problems,
}
