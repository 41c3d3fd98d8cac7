"""The likelihood of a run's validation split: ``eval.metrics: [nll]`` at the end of a run, and ``sandbox likelihood``.

Each estimator of ``eval.nll.estimators`` scores the first ``eval.nll.items`` items of ``eval.nll.split`` (the
validation split by default) in batches of
``eval.nll.batch``, with noise drawn from ``eval.nll.seed`` (the same items and noise in every run, so the
cells of a sweep are compared on equal terms). A class-conditional model is scored with the null class: the
figure is ``-log p(x)``, not ``-log p(x | c)``. The record of each estimator (:meth:`Estimate.record`) names
its unit (bits/dim for discrete data, :attr:`DataSplits.levels`; nats/dim otherwise), whether it is a bound,
its standard error over items, its network evaluations per item and its seconds; where the dataset knows its
exact log-density (:attr:`DataSplits.log_density`), ``exact`` gives it for the same items.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Optional

import torch
from rich.console import Console

from sandbox.console import console as default_console
from sandbox.console import counter
from sandbox.engine.build import Parts, real_heldout
from sandbox.engine.likelihood.elbo import elbo
from sandbox.engine.likelihood.estimate import Estimate, LogSnrRange
from sandbox.engine.likelihood.ode import ode_nll
from sandbox.engine.likelihood.quantise import decoder_log_snr, dequantise, mass_bound
from sandbox.engine.likelihood.vlb import vlb
from sandbox.engine.precond import LabelledDenoise
from sandbox.errors import RecipeError
from sandbox.protocols import Denoise, null_label
from sandbox.recipe import Recipe
from sandbox.sections import NllConfig

EXACT_DIVERGENCE_DIMS = 64  # divergence "auto": exact for vectors of at most this many coordinates
CONTINUOUS_LOG_SNR_MAX = 12.0  # log_snr_max null on continuous data: sigma~ = 0.0025


def log_snr_max(settings: NllConfig, levels: Optional[int]) -> float:
    """``eval.nll.log_snr_max``, or by default :func:`decoder_log_snr` for discrete data (the same for every schedule
    that reaches it, so schedules compare on one interval) and 12 for continuous data."""
    if settings.log_snr_max is not None:
        return settings.log_snr_max
    return decoder_log_snr(levels) if levels else CONTINUOUS_LOG_SNR_MAX


def wanted(recipe: Recipe) -> bool:
    """Whether the recipe asks for the likelihood (``eval.metrics: [nll]``)."""
    return "nll" in recipe.eval.metrics


def check(recipe: Recipe, parts: Parts) -> None:
    """Before any work: every estimator of ``eval.nll`` applies to this schedule and data, and there are items."""
    settings, data = recipe.eval.nll, parts.data
    schedule_name = recipe.components["schedule"][0]
    if "vlb" in settings.estimators and not parts.schedule.num_steps:
        raise RecipeError(
            f"recipe key 'eval.nll.estimators': {list(settings.estimators)!r}: the discrete variational bound "
            f"(vlb) needs a discrete schedule, and schedule '{schedule_name}' is continuous; use elbo or ode"
        )
    if settings.dequantize and not data.levels:
        raise RecipeError(
            "recipe key 'eval.nll.dequantize': True: dequantisation needs discrete data (evenly spaced values, "
            f"DataSplits.levels), and dataset '{recipe.components['dataset'][0]}' gives continuous values; "
            "leave it null"
        )
    if len(data.train if settings.split == "train" else data.val) == 0:
        raise RecipeError(
            f"recipe key 'eval.nll.split': {settings.split!r}: dataset '{recipe.components['dataset'][0]}' has no "
            "items in that split"
        )
    try:
        LogSnrRange.of(parts.schedule, log_snr_max(settings, data.levels))
    except ValueError as exc:
        raise RecipeError(f"recipe key 'eval.nll.log_snr_max': {settings.log_snr_max}: {exc}") from None


def divergence(settings: NllConfig, shape: tuple[int, ...]) -> str:
    """``eval.nll.divergence`` with ``auto`` resolved: exact for vectors of at most 64 coordinates."""
    if settings.divergence != "auto":
        return settings.divergence
    return "exact" if len(shape) == 1 and shape[0] <= EXACT_DIVERGENCE_DIMS else "hutchinson"


def likelihood(
    recipe: Recipe,
    parts: Parts,
    model: LabelledDenoise,
    device: torch.device,
    console: Optional[Console] = None,
) -> dict[str, Any]:
    """``{estimator: record}`` for each of ``eval.nll.estimators`` on the validation split (and ``exact``)."""
    settings, data = recipe.eval.nll, parts.data
    split = data.train if settings.split == "train" else data.val
    items = real_heldout(parts, settings.items or len(split), settings.split)
    null = null_label(parts.classes) if parts.classes else None

    def denoise(x_t: torch.Tensor, t: Any) -> torch.Tensor:
        if null is None:
            return model(x_t.to(device), t).to("cpu")
        labels = torch.full((len(x_t),), null, dtype=torch.int64, device=device)
        return model(x_t.to(device), t, labels).to("cpu")

    out: dict[str, Any] = {}
    span = LogSnrRange.of(parts.schedule, log_snr_max(settings, data.levels))
    bar = counter(console or default_console)
    with bar:
        for name in settings.estimators:
            task = bar.add_task(f"likelihood ({name}, {settings.split})", total=len(items))
            started = time.perf_counter()
            estimate = _estimate(
                name,
                denoise,
                parts,
                items,
                settings,
                span,
                null is not None,
                recipe.train.sigma_data,
                partial(_completed, bar, task),
            )
            out[name] = {**estimate.record(), "seconds": time.perf_counter() - started}
            bar.update(task, completed=len(items))
    if data.log_density is not None:
        exact = -data.log_density(items, 0.0).to(torch.float64)
        out["exact"] = Estimate("exact", exact, items[0].numel(), None, bound=False, nfe=0.0).record()
    return out


def _estimate(
    name: str,
    denoise: Denoise,
    parts: Parts,
    items: torch.Tensor,
    settings: NllConfig,
    span: LogSnrRange,
    conditional: bool,
    sigma_data: float,
    report: Callable[[float], None],
) -> Estimate:
    """One estimator over every item, batch by batch, concatenated; ``sigma_data`` is the elbo's control variate
    on continuous data (``train.sigma_data``), ``report(items done)`` follows the work."""
    generator = torch.Generator().manual_seed(settings.seed)
    levels, schedule = parts.data.levels, parts.schedule
    parts_: list[Estimate] = []
    for start in range(0, len(items), settings.batch):
        x = items[start : start + settings.batch]
        progress = partial(_batch_progress, report, start, len(x))
        if name == "vlb":
            with torch.no_grad():
                estimate = vlb(
                    denoise,
                    schedule,
                    x,
                    variance=settings.variance,
                    generator=generator,
                    levels=levels,
                    progress=progress,
                )
        elif name == "elbo":
            with torch.no_grad():
                estimate = elbo(
                    denoise,
                    schedule,
                    x,
                    span=span,
                    draws=settings.draws,
                    generator=generator,
                    levels=levels,
                    sigma_data=None if levels else sigma_data,
                    progress=progress,
                )
        else:
            estimate = _ode(denoise, parts, x, settings, span, generator, progress)
        parts_.append(estimate)
    first = parts_[0]
    return Estimate(
        name,
        torch.cat([p.nats for p in parts_]),
        first.dims,
        first.levels,
        first.bound,
        nfe=sum(p.nfe * len(p.nats) for p in parts_) / len(items),
        terms={k: torch.cat([p.terms[k] for p in parts_]) for k in first.terms},
        settings=first.settings | ({"conditional": "null class"} if conditional else {}),
    )


def _ode(
    denoise: Denoise,
    parts: Parts,
    x: torch.Tensor,
    settings: NllConfig,
    span: LogSnrRange,
    generator: torch.Generator,
    progress: Callable[[float], None],
) -> Estimate:
    """The ODE likelihood of one batch, dequantised where the data is discrete (unless asked not to)."""
    levels = parts.data.levels
    dequantize = settings.dequantize if settings.dequantize is not None else bool(levels)
    y0 = dequantise(x, levels, generator) if dequantize and levels else x
    how = divergence(settings, tuple(parts.data.shape))
    nats, info = ode_nll(
        denoise,
        parts.schedule,
        y0,
        span=span,
        divergence=how,
        probes=settings.probes,
        rtol=settings.rtol,
        atol=settings.atol,
        generator=generator,
        progress=progress,
    )
    dims = x[0].numel()
    described = {
        "divergence": how,
        **({"probes": settings.probes} if how == "hutchinson" else {}),
        "rtol": settings.rtol,
        "atol": settings.atol,
        "solver": "RK45",
        "log_snr": info["log_snr"],
        "smoothing": math.exp(-span.high / 2),
        "dequantized": bool(dequantize and levels),
    }
    if dequantize and levels:  # a density of the dequantised data: a bound on the discrete data's NLL
        return Estimate("ode", mass_bound(nats, dims, levels), dims, levels, True, info["nfe"], settings=described)
    return Estimate("ode", nats, dims, None, False, info["nfe"], settings=described)


def rows(records: dict[str, Any]) -> list[list[Any]]:
    """The summary table's rows of a likelihood: ``nll (ode), bits/dim  1.234 +- 0.005 (bound)``."""
    out = []
    for name, record in records.items():
        bound = " (bound)" if record["bound"] else ""
        out.append([f"nll ({name}), {record['unit']}", f"{record['nll']:.4f} ± {record['stderr']:.4f}{bound}"])
    return out


def _completed(bar: Any, task: Any, done: float) -> None:
    bar.update(task, completed=done)


def _batch_progress(report: Callable[[float], None], start: int, size: int, fraction: float) -> None:
    """A batch's ``fraction`` done, reported as items done over the whole split."""
    report(start + fraction * size)
