"""One sampler's grid tuned at one NFE (:func:`tune_grid`), chosen by its error on noise it was not tuned on.

The objective is the mean squared distance to a many-step reference solution of the same sampler from the
same starting noise, on a batch of the run's own starting noise (the first draws of ``run.seed +``
:data:`sandbox.engine.generate.FINAL_SEED`, the noise ``sandbox sample`` starts from; :mod:`sandbox.engine.solve`
runs the samplers):

    objective(grid) = mean over the batch and the coordinates of (x_grid - x_ref)^2

For a deterministic solver the map from noise to sample is fixed, so the squared distance to the converged
solution is exactly the discretisation error, and one evaluation costs NFE denoiser calls on the batch.
Align Your Steps (Sabour et al. 2024) minimises instead a bound on the KL divergence between the discretised
and exact processes, which needs samples of the data; the direct target needs neither. A stochastic sampler
is scored the same way along fixed Brownian paths (:data:`sandbox.engine.solve.TRAIN_PATHS`, four per
batch, and four others held out): its reference is itself with many steps on the same paths, so the
distance is its strong discretisation error. A sampler that draws its noise from its generator instead of
:func:`sandbox.sampling.step_noise` is refused: its output is then no function of the grid.

The search (:mod:`sandbox.tools.tune.search`, Levenberg-Marquardt by default) starts from the best, on the
tuning batch, of the sampler's own grid and every registered grid with as many steps and the same NFE, each
from the own grid's first time (where the reference's flow starts). A second batch of :data:`HELDOUT` times as
many draws, on other Brownian paths, is held out: every point the search accepts is scored on it, and the search
stops once that score has not improved for :data:`PATIENCE` points (early stopping).

The mean squared error of a mixture's samples is dominated by the few that end in another component than the
exact flow takes them to, and a grid that lowers every other sample's error can make them more frequent, at
rates (one in 10,000) no held-out batch of 1,024 sees. So for a deterministic sampler the grids that beat the
own grid held out (the :data:`CONFIRMED` lowest there, then the lowest's :data:`SHRINK` fractions of the way
from the own grid, where fewer samples change component) are checked in turn on a third batch of
:data:`CONFIRM` times the tuning batch (:mod:`sandbox.tools.tune.confirm`, which solves the reference only
where the two grids disagree most), and the first that beats the own grid there by :data:`MARGIN` standard
errors is kept. A stochastic sampler's Brownian path is drawn for a whole batch, so no reference can be solved
for a part of it: it keeps the grid with the lowest held-out error if that beats the own grid by
:data:`MARGIN` paired standard errors with no higher median per-sample error (the typical sample's, which
the rare ones do not move). Otherwise the own grid is kept and the report says so.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from rich.console import Console

from sandbox.console import counter
from sandbox.engine.solve import (
    BATCH,
    HELDOUT_PATHS,
    REFERENCE_STEPS,
    TRAIN_PATHS,
    Target,
    is_deterministic,
    nfe_of,
    reference,
    reference_solver,
    require_path,
    run_sampler,
    sample_errors,
    sampler_params,
    starting_noise,
    steps_for_nfe,
    with_values,
)
from sandbox.errors import SandboxError
from sandbox.grids import descending, grid_times, sampler_grid
from sandbox.registry import use_registry
from sandbox.tools.tune.confirm import Confirmation, confirm
from sandbox.tools.tune.search import SEARCHES, levenberg_marquardt, nelder_mead
from sandbox.tools.tune.space import LogSnrGrid, log_snr

# fmt: off
ITERATIONS = 200   # objective evaluations of the search, on the tuning batch
HELDOUT = 4        # held-out draws per draw of the tuning batch: a rare change of mode must show there
PATIENCE = 3       # held-out checks without improvement before the search stops
MARGIN = 2.0       # standard errors by which a grid must beat the own grid to replace it
CONFIRM = 128      # new draws per draw of the tuning batch the last check runs on (deterministic samplers)
CONFIRMED = 2      # grids that check runs for, the lowest held-out errors that beat the own grid there
SHRINK = (0.5, 0.25, 0.125, 0.0625)  # then the lowest's fractions of the way from the own grid, in log-SNR
# fmt: on


@dataclass
class Tuned:
    """The outcome of :func:`tune_grid`."""

    # fmt: off
    sampler: str
    nfe: int
    steps: int
    start_grid: Any                     # the sampler's own grid
    start_times: list[float]            # and its times
    origin: str                         # the grid the search started from: the best of ``candidates``
    candidates: dict[str, float]        # the objective of the own grid and of each registered grid, tuning batch
    times: list[float]                  # the grid kept: the tuned one, or the own grid (``kept_start``)
    before: dict[str, float]            # objective of the own grid: {"train": ..., "heldout": ...}
    after: dict[str, float]             # and of the grid kept
    evaluations: int                    # on the tuning batch, the candidates included
    search: str = "gauss-newton"
    kept_start: bool = False            # no grid beat the own grid by MARGIN standard errors (held out, confirmed)
    chosen: str = ""                    # what was kept: "tuned", a candidate's name, or "own"
    best: dict[str, Any] = field(default_factory=dict)  # the lowest held-out grid: its name, error, gain, se
    history: list[dict[str, float]] = field(default_factory=list)  # error against evaluations
    reference: dict[str, Any] = field(default_factory=dict)
    confirmed: dict[str, dict[str, float]] = field(default_factory=dict)  # each checked grid's Confirmation
    batch: int = 0
    heldout: int = 0
    confirm: int = 0                    # draws of the confirmation batch (0: none ran)
    seconds: float = 0.0
    # fmt: on


class _Batches:
    """The tuning and held-out batches with their reference samples; each grid's residuals and errors."""

    def __init__(self, target: Target, component: Any, params: Any, batches: dict[str, Any], bar: Any, task: Any):
        self.target, self.component, self.params, self.batches = target, component, params, batches
        self.bar, self.task, self.evaluations = bar, task, 0

    def samples(self, times: Optional[list[float]], name: str) -> Optional[torch.Tensor]:
        if name == "train":
            self.evaluations += 1
            if self.bar is not None and self.task is not None:
                self.bar.advance(self.task)
        if times is None or not descending(times):
            return None
        x, _, paths = self.batches[name]
        try:
            out, _ = run_sampler(self.target, self.component, with_values(self.params, grid=times), x, path=paths)
        except ArithmeticError:  # two times a float apart share one noise level: a step of length 0
            return None
        return out if bool(torch.isfinite(out).all()) else None

    def residuals(self, times: Optional[list[float]], name: str = "train") -> Optional[torch.Tensor]:
        out = self.samples(times, name)
        if out is None:
            return None
        x_ref = self.batches[name][1]
        return (out - x_ref).flatten() / math.sqrt(out.numel())

    def errors(self, times: Optional[list[float]], name: str) -> Optional[torch.Tensor]:
        out = self.samples(times, name)
        return None if out is None else sample_errors(out, self.batches[name][1])


def tune_grid(
    target: Target,
    nfe: int,
    *,
    sampler: Optional[str] = None,
    reference_sampler: Optional[str] = None,
    batch: int = BATCH,
    heldout: Optional[int] = None,
    confirm_draws: Optional[int] = None,
    iterations: int = ITERATIONS,
    reference_steps: int = REFERENCE_STEPS,
    search: str = SEARCHES[0],
    console: Optional[Console] = None,
) -> Tuned:
    """Search the interior times of the sampler's grid at ``nfe`` for the smallest MSE to the reference, and keep
    the grid with the smallest held-out MSE, the own grid unless another beats it there by :data:`MARGIN`."""
    start_clock = time.perf_counter()
    name, component, params = sampler_params(target, sampler)
    require_path(
        target,
        name,
        component,
        params,
        f"sampler '{name}'",
        "its output from the same starting noise is not a function of the grid: tune another",
    )
    stochastic = not is_deterministic(target, component, params)
    if stochastic and reference_sampler not in (None, name):
        raise SandboxError(
            f"--reference {reference_sampler}: sampler '{name}' draws noise as it steps, so its reference is "
            f"itself with many steps on the same Brownian path; leave --reference out"
        )
    if search not in SEARCHES:
        raise SandboxError(f"--search {search!r}: expected one of {', '.join(SEARCHES)}")
    held_n = HELDOUT * batch if heldout is None else heldout
    confirm_n = CONFIRM * batch if confirm_draws is None else confirm_draws
    if nfe < 2 or batch < 1 or held_n < 2 or iterations < 0 or confirm_n < 0:
        raise SandboxError(
            f"--nfe {nfe}, --batch {batch}, --heldout {held_n}, --confirm {confirm_n}, --iterations {iterations}: "
            "expected NFE >= 2, batch >= 1, held-out >= 2, confirm >= 0"
        )
    if stochastic:  # its Brownian path is drawn for the whole batch: no reference for a part of it
        confirm_n = 0
    steps = steps_for_nfe(target, component, params, nfe)
    params = with_values(params, steps=steps)
    used = nfe_of(target, component, params)
    schedule = target.parts.schedule
    with torch.no_grad():
        start = grid_times(_grid_of(target, params), schedule, steps)
    if len(start) < 3:
        raise SandboxError(f"--nfe {nfe}: sampler '{name}' takes one step there, which has no time to move")
    noise = starting_noise(target, batch + held_n + confirm_n)
    if target.device is None:  # an analytic denoiser runs in float64: differences of 1e-6 are resolved
        noise = noise.double()
    train, held_out, confirmation = noise[:batch], noise[batch : batch + held_n], noise[batch + held_n :]
    bar = counter(console, transient=True) if console is not None else None
    with bar if bar is not None else contextlib.nullcontext():
        task = bar.add_task(f"tune-steps: {name} reference ({reference_steps} steps)", total=None) if bar else None
        ref = reference(target, reference_sampler or name, reference_steps, train, held_out)
        paths = (TRAIN_PATHS, HELDOUT_PATHS) if stochastic else (None, None)
        data = _Batches(
            target,
            component,
            params,
            {
                "train": (train, ref.train, paths[0]),
                "heldout": (held_out, ref.heldout, paths[1]),
                "confirm": (confirmation, None, None),
            },
            bar,
            task,
        )

        # The search starts from the best of the sampler's own grid and every registered grid with as many steps
        # (a noise-level grid can beat a time-uniform one by far: 64-D mixture, 20 NFE), each also from the own
        # grid's first time where it starts elsewhere: the reference's flow starts there, and a grid that starts
        # lower (at sigma~ = 80) maps the same noise elsewhere (64-D mixture, 20 NFE, UniPC on uniform_log_snr:
        # 1.8e-3 from the exact flow, 6.8e-4 from the own grid's first time).
        own = str(params.grid) if isinstance(params.grid, str) else "own"
        candidates = {own: start}
        for grid_name in target.registry.names("grid"):
            with torch.no_grad():
                times = grid_times(_grid_of(target, with_values(params, grid=grid_name)), schedule, steps)
            for label, grid in ((grid_name, times), (f"{grid_name}-from-t0", [start[0], *times[1:]])):
                if (
                    label not in candidates
                    and grid not in candidates.values()
                    and len(grid) == len(start)
                    and descending(grid)
                    and nfe_of(target, component, with_values(params, grid=grid)) == used
                ):
                    candidates[label] = grid
        if bar is not None and task is not None:  # at most: the search may stop before its budget
            bar.update(
                task, description=f"tune-steps: {name} at NFE {used}", total=len(candidates) + iterations, completed=0
            )
        scores = {label: _mean(data.errors(times, "train")) for label, times in candidates.items()}
        held = {label: data.errors(times, "heldout") for label, times in candidates.items()}
        origin = min(scores, key=lambda label: scores[label])
        space = LogSnrGrid(schedule, candidates[origin])
        found: dict[str, Any] = {}  # the point with the lowest held-out error the search accepted
        history = [{"evaluations": data.evaluations, "train": scores[origin], "heldout": _mean(held[origin])}]
        stale = [0]

        def accept(z: list[float], value: float, evaluations: int) -> bool:
            """Score an accepted point on the held-out batch; stop after PATIENCE checks without improvement."""
            if evaluations - history[-1]["evaluations"] < len(z) + 1 and stale[0] < PATIENCE:
                return False  # Nelder-Mead improves every few evaluations: check as often as Gauss-Newton would
            times = space.decode(z)
            errors = data.errors(times, "heldout")
            history.append({"evaluations": data.evaluations, "train": value, "heldout": _mean(errors)})
            if errors is not None and _mean(errors) < min(_mean(found.get("errors")), _mean(held[origin])):
                found.update(times=times, errors=errors, train=value)
                stale[0] = 0
            else:
                stale[0] += 1
            return stale[0] >= PATIENCE

        def steady(z: list[float]) -> Optional[list[float]]:
            """The grid of ``z``, or None (scored as no grid) where a step grows too fast."""
            times = space.decode(z)
            return times if space.steady(times) else None

        if iterations:
            z0 = space.encode(candidates[origin])
            budget = iterations
            if search == "gauss-newton":
                step = 1e-6 if noise.dtype == torch.float64 else 3e-3
                levenberg_marquardt(lambda z: data.residuals(steady(z)), z0, budget, accept, step)
            else:
                nelder_mead(lambda z: _mean(data.errors(steady(z), "train")), z0, budget, accept)
        # the grid kept: with a confirmation batch, the first of (the two lowest held-out errors that beat the own
        # grid there, then the lowest's way toward the own grid) to beat it on the confirmation batch by MARGIN
        # standard errors; without one (a stochastic sampler, or --confirm 0), the lowest held-out error, if it
        # beats the own grid there by MARGIN paired standard errors with no higher median error
        pool = {label: (candidates[label], held[label], scores[label]) for label in candidates}
        if found:
            pool["tuned"] = (found["times"], found["errors"], found["train"])
        paired = {label: _paired(pool[label][1], held[own]) for label in pool}
        typical = _median(held[own])  # a grid that moves every sample away is no better for a few flips it saves
        ranked = sorted(
            (
                label
                for label in pool
                if label != own
                and (
                    paired[label][0] > 0
                    if confirm_n
                    else paired[label][0] > MARGIN * paired[label][1] and _median(pool[label][1]) <= typical
                )
            ),
            key=lambda label: _mean(pool[label][1]),
        )
        checked: dict[str, Confirmation] = {}
        chosen: Optional[str] = None
        if confirm_n and ranked:
            tried = {label: pool[label][0] for label in ranked[:CONFIRMED]}
            for fraction in SHRINK:
                tried[f"{ranked[0]}-{fraction:g}"] = _toward(schedule, start, pool[ranked[0]][0], fraction)
            checked = _confirm(data, target, reference_sampler or name, reference_steps, start, tried, batch)
            chosen = next((label for label, c in checked.items() if c.gain > MARGIN * c.se), None)
            for label in checked:
                if label not in pool:
                    errors = data.errors(tried[label], "heldout")
                    pool[label] = (tried[label], errors, _mean(data.errors(tried[label], "train")))
                    paired[label] = _paired(errors, held[own])
        elif ranked:
            chosen = ranked[0]
        kept_start = chosen is None
        chosen_label = own if chosen is None else chosen
        chosen_times = start if chosen is None else pool[chosen][0]
        shown = chosen or (ranked or [min(pool, key=lambda label: (label == own, _mean(pool[label][1])))])[0]
        best = {"grid": shown, "heldout": _mean(pool[shown][1]), "gain": paired[shown][0], "se": paired[shown][1]}
        if shown in checked:
            best.update(confirm_gain=checked[shown].gain, confirm_se=checked[shown].se)
        before = {"train": scores[own], "heldout": _mean(held[own])}
        after = {"train": pool[chosen_label][2], "heldout": _mean(pool[chosen_label][1])}
        if bar is not None and task is not None:
            bar.update(task, total=data.evaluations, completed=data.evaluations)
    return Tuned(
        sampler=name,
        nfe=used,
        steps=steps,
        start_grid=params.grid,
        start_times=start,
        origin=origin,
        candidates=scores,
        times=list(chosen_times),
        before=before,
        after=after,
        evaluations=data.evaluations,
        search=search,
        kept_start=kept_start,
        chosen="own" if kept_start else chosen_label,
        best=best,
        confirmed={label: c.record() for label, c in checked.items()},
        history=history,
        reference={
            "sampler": ref.sampler,
            "steps": ref.steps,
            "nfe": ref.nfe,
            "grid": ref.grid,
            "self_error": ref.self_error,
        },
        batch=batch,
        heldout=held_n,
        confirm=confirm_n,
        seconds=time.perf_counter() - start_clock,
    )


def _confirm(
    data: _Batches,
    target: Target,
    reference_name: str,
    reference_steps: int,
    own: list[float],
    tried: dict[str, list[float]],
    solved: int,
) -> dict[str, Confirmation]:
    """The gain over the own grid of each grid of ``tried`` in turn on the confirmation batch, up to the first that
    beats it by :data:`MARGIN` standard errors (:func:`sandbox.tools.tune.confirm.confirm`; the reference solved
    for ``solved`` draws of each)."""
    _, component, params = reference_solver(target, reference_name, reference_steps)
    draws = data.batches["confirm"][0]
    own_samples, own_held = data.samples(own, "confirm"), data.samples(own, "heldout")
    checked: dict[str, Confirmation] = {}
    if own_samples is None or own_held is None:
        return checked
    for label, times in tried.items():
        samples, held = data.samples(times, "confirm"), data.samples(times, "heldout")
        if samples is None or held is None:
            continue
        checked[label] = confirm(
            samples,
            own_samples,
            lambda index: run_sampler(target, component, params, draws[index])[0],
            (held, own_held, data.batches["heldout"][1]),
            solved,
        )
        if checked[label].gain > MARGIN * checked[label].se:
            break
    return checked


def _toward(schedule: Any, start: list[float], times: list[float], fraction: float) -> list[float]:
    """The grid ``fraction`` of the way from ``start`` to ``times`` in log-SNR, its ends those of both."""
    lam = [
        (1 - fraction) * log_snr(schedule, a) + fraction * log_snr(schedule, b)
        for a, b in zip(start[1:-1], times[1:-1])
    ]
    inner = schedule.t_from_log_snr(torch.tensor(lam, dtype=torch.float64)).to(torch.float64).tolist()
    return [start[0], *inner, 0.0]


def _mean(errors: Optional[torch.Tensor]) -> float:
    """The MSE from per-sample errors; ``inf`` for none (no valid grid, or not finite)."""
    if errors is None:
        return math.inf
    value = float(errors.mean())
    return value if math.isfinite(value) else math.inf


def _median(errors: Optional[torch.Tensor]) -> float:
    """The median per-sample error: the typical sample's, which a few samples that change mode do not move."""
    return math.inf if errors is None else float(errors.median())


def _paired(errors: Optional[torch.Tensor], own: Optional[torch.Tensor]) -> tuple[float, float]:
    """How much lower ``errors`` are than ``own`` on the same noise, and the standard error of that mean."""
    if errors is None:
        return -math.inf, 0.0
    if own is None:
        return math.inf, 0.0
    diff = own - errors
    return float(diff.mean()), float(diff.std() / math.sqrt(len(diff))) if len(diff) > 1 else math.inf


def _grid_of(target: Target, params: Any) -> Any:
    with use_registry(target.registry):
        return sampler_grid(params)
