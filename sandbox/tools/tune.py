"""``sandbox tune-steps``: a time grid tuned to a model.

A sampler at a fixed budget of network evaluations (NFE) makes an error that
depends on where on ``[0, 1]`` it spends them. :func:`tune_grid` searches the
grid's interior times for the one that brings the sampler's output closest to
a many-step reference solution of the same sampler from the same starting
noise, on a batch of the run's own starting noise (the first draws of
``run.seed +`` :data:`sandbox.engine.run.FINAL_SEED`, the noise ``sandbox sample``
starts from; :mod:`sandbox.engine.solve` runs the samplers):

    objective(grid) = mean over the batch and the coordinates of (x_grid - x_ref)^2

This is the error the grid is chosen to remove, measured directly: for a
deterministic solver the map from noise to sample is fixed, so the squared
distance to the converged solution is exactly the discretisation error, and one
evaluation costs NFE denoiser calls on the batch, nothing else. Align Your Steps
(Sabour et al. 2024) minimises instead a bound on the KL divergence between the
discretised and exact processes, which needs samples of the data and a
stochastic sampler's analysis; the direct target needs neither and applies to
every deterministic solver as it is implemented. A stochastic sampler is tuned
the same way on a fixed Brownian path per batch (:func:`sandbox.sampling.brownian_path`,
k-diffusion's Brownian-tree idea): its reference is itself with many steps on
the same path, so the distance is its strong discretisation error, which bounds
the error of any Lipschitz statistic of the samples. A sampler that draws its noise
from its generator instead of :func:`sandbox.sampling.step_noise` is refused:
its output is then no function of the grid.

The grid is parametrised by its log-SNR increments, ``lambda_i = lambda_0 +
(lambda_min - lambda_0) cumsum(softmax(z))_i`` between the grid's first time
and the schedule's lowest time (:func:`sandbox.grids.lowest_time`), so every
``z`` is a strictly descending grid with the same number of steps, hence the
same NFE. ``z`` starts at the best, on the tuning batch, of the sampler's own
grid and every registered grid with as many steps and the same NFE, and is
searched by Nelder-Mead (scipy, a dependency of scikit-learn); the best grid
seen is kept, the candidates included, so the tuned grid is never worse on the
batch it was tuned on than any of them. A second, held-out batch reports
whether the gain carries over to other noise.

The result is ``RUN_DIR/grids/<name>.json`` (times, sampler, NFE, the objective
before and after); ``sandbox sample RUN_DIR sampler.grid=<name>`` steps on it, and
a recipe uses it as ``sampler.grid: path/to/<name>.json`` (:mod:`sandbox.grids` reads it).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sandbox.console import counter
from sandbox.engine.rundir import RunDir, new_run_dir, write_json, write_text
from sandbox.engine.solve import (
    BATCH,
    HELDOUT_PATH,
    REFERENCE_STEPS,
    TRAIN_PATH,
    Target,
    follows_path,
    is_deterministic,
    load_target,
    mse,
    nfe_of,
    reference,
    run_sampler,
    sampler_params,
    samplers_where,
    starting_noise,
    steps_for_nfe,
    with_values,
)
from sandbox.errors import SandboxError
from sandbox.grids import descending, grid_record, grid_times, is_grid_name, lowest_time, sampler_grid
from sandbox.protocols import Schedule
from sandbox.registry import use_registry
from sandbox.sampling import scale_free

ITERATIONS = 200  # objective evaluations of the search

# ------------------------------------------------------------------------------------------------ the search


def log_snr(schedule: Schedule, t: float) -> float:
    """``lambda(t) = -2 ln sigma~(t)``."""
    return -2.0 * math.log(scale_free(schedule, t)[1])


class LogSnrGrid:
    """Grids of ``K`` steps from ``t_0`` to 0 as ``K - 1`` free numbers: softmax log-SNR increments."""

    def __init__(self, schedule: Schedule, start: list[float]):
        self.schedule = schedule
        self.t0 = start[0]
        self.steps = len(start) - 1
        self.lam0 = log_snr(schedule, self.t0)
        inner = [log_snr(schedule, t) for t in start[1:-1]]
        self.lam1 = max([log_snr(schedule, lowest_time(schedule)), *inner])

    def encode(self, times: list[float]) -> list[float]:
        fractions = [(log_snr(self.schedule, t) - self.lam0) / (self.lam1 - self.lam0) for t in times[1:-1]]
        edges = [0.0, *fractions, 1.0]
        increments = [max(b - a, 1e-9) for a, b in zip(edges[:-1], edges[1:])]
        return [math.log(d / increments[-1]) for d in increments[:-1]]

    def decode(self, z: Any) -> list[float]:
        logits = torch.tensor([*list(z), 0.0], dtype=torch.float64)
        fractions = torch.cumsum(torch.softmax(logits, 0), 0)[:-1]
        lam = self.lam0 + fractions * (self.lam1 - self.lam0)
        inner = self.schedule.t_from_log_snr(lam).to(torch.float64).tolist()
        return [self.t0, *inner, 0.0]


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
    times: list[float]
    before: dict[str, float]            # objective of the own grid: {"train": ..., "heldout": ...}
    after: dict[str, float]             # and of the tuned grid
    evaluations: int
    reference: dict[str, Any] = field(default_factory=dict)
    batch: int = 0
    seconds: float = 0.0
    # fmt: on


def tune_grid(
    target: Target,
    nfe: int,
    *,
    sampler: Optional[str] = None,
    reference_sampler: Optional[str] = None,
    batch: int = BATCH,
    iterations: int = ITERATIONS,
    reference_steps: int = REFERENCE_STEPS,
    console: Optional[Console] = None,
) -> Tuned:
    """Search the interior times of the sampler's grid at ``nfe`` for the smallest MSE to the reference."""
    from scipy.optimize import minimize  # scipy comes with scikit-learn

    start_clock = time.perf_counter()
    name, component, params = sampler_params(target, sampler)
    if not follows_path(target, component, params):
        raise SandboxError(
            f"sampler '{name}' draws noise from its generator as it steps (not through "
            f"sandbox.sampling.step_noise), so its output from the same starting noise is not a function of the "
            f"grid; tune one of {', '.join(samplers_where(target, follows_path))}"
        )
    if not is_deterministic(target, component, params) and reference_sampler not in (None, name):
        raise SandboxError(
            f"--reference {reference_sampler}: sampler '{name}' draws noise as it steps, so its reference is "
            f"itself with many steps on the same Brownian path; leave --reference out"
        )
    if nfe < 2 or batch < 1 or iterations < 0:
        raise SandboxError(f"--nfe {nfe}, --batch {batch}, --iterations {iterations}: expected NFE >= 2, batch >= 1")
    steps = steps_for_nfe(target, component, params, nfe)
    params = with_values(params, steps=steps)
    used = nfe_of(target, component, params)
    schedule = target.parts.schedule
    with torch.no_grad():
        start = grid_times(_grid_of(target, params), schedule, steps)
    if len(start) < 3:
        raise SandboxError(f"--nfe {nfe}: sampler '{name}' takes one step there, which has no time to move")
    noise = starting_noise(target, 2 * batch)
    train, heldout = noise[:batch], noise[batch:]
    bar = counter(console, transient=True) if console is not None else None
    with bar if bar is not None else contextlib.nullcontext():
        task = bar.add_task(f"tune-steps: {name} reference ({reference_steps} steps)", total=None) if bar else None
        evaluated = [0]  # the evaluations on the tuning batch, for the bar
        ref = reference(target, reference_sampler or name, reference_steps, train, heldout)

        batches = {"train": (train, ref.train, TRAIN_PATH), "heldout": (heldout, ref.heldout, HELDOUT_PATH)}

        def objective(times: list[float], batch_name: str = "train") -> float:
            if bar is not None and task is not None and batch_name == "train":
                evaluated[0] += 1
                bar.advance(task)
            if not descending(times):
                return math.inf
            x, x_ref, path = batches[batch_name]
            out, _ = run_sampler(target, component, with_values(params, grid=times), x, path=path)
            return mse(out, x_ref)

        # The search starts from the best of the sampler's own grid and every registered grid with as many steps
        # (a noise-level grid can beat a time-uniform one by far: 64-D mixture, 20 NFE), so the tuned grid is never
        # worse than any of them on the tuning batch.
        candidates = {str(params.grid) if isinstance(params.grid, str) else "own": start}
        for grid_name in target.registry.names("grid"):
            with torch.no_grad():
                times = grid_times(_grid_of(target, with_values(params, grid=grid_name)), schedule, steps)
            if len(times) == len(start) and nfe_of(target, component, with_values(params, grid=times)) == used:
                candidates.setdefault(grid_name, times)
        if bar is not None and task is not None:  # at most: the search may converge before its budget
            bar.update(
                task, description=f"tune-steps: {name} at NFE {used}", total=len(candidates) + iterations, completed=0
            )
        scores = {label: objective(times) for label, times in candidates.items()}
        origin = min(scores, key=lambda label: scores[label])
        space = LogSnrGrid(schedule, candidates[origin])
        best: dict[str, Any] = {"value": scores[origin], "times": candidates[origin]}
        count = [len(candidates)]

        def f(z: Any) -> float:
            count[0] += 1
            times = space.decode(z)
            value = objective(times)
            if value < best["value"]:
                best["value"], best["times"] = value, times
            return value

        if iterations:
            z0 = space.encode(candidates[origin])
            minimize(f, z0, method="Nelder-Mead", options={"maxfev": iterations, "adaptive": len(z0) > 3})
        tuned_times = list(best["times"])
        before = {"train": scores[next(iter(candidates))], "heldout": objective(start, "heldout")}
        after = {"train": float(best["value"]), "heldout": objective(tuned_times, "heldout")}
        if bar is not None and task is not None:
            bar.update(task, total=evaluated[0])
    return Tuned(
        sampler=name,
        nfe=used,
        steps=steps,
        start_grid=params.grid,
        start_times=start,
        origin=origin,
        candidates=scores,
        times=tuned_times,
        before=before,
        after=after,
        evaluations=count[0],
        reference={
            "sampler": ref.sampler,
            "steps": ref.steps,
            "nfe": ref.nfe,
            "grid": ref.grid,
            "self_error": ref.self_error,
        },
        batch=batch,
        seconds=time.perf_counter() - start_clock,
    )


def _grid_of(target: Target, params: Any) -> Any:
    with use_registry(target.registry):
        return sampler_grid(params)


# ------------------------------------------------------------------------------------------------ saved grids


def save_grid(target: Target, tuned: Tuned, name: Optional[str] = None) -> Path:
    """Write the grid as ``grids/<name>.json`` in the run folder (a recipe: in a new folder under ``run.output``
    holding the resolved recipe too, so ``sandbox sample`` takes it as a run folder)."""
    name = name or f"{tuned.sampler}-nfe{tuned.nfe}"
    if not is_grid_name(name):  # the names a recipe's sampler.grid accepts
        raise SandboxError(f"--name {name!r}: expected lowercase letters, digits, _ and - (a grid name)")
    if target.run_dir is not None:
        folder = RunDir(target.run_dir)
    else:
        recipe = target.recipe
        folder = RunDir(new_run_dir(recipe.run.output, f"tune-{recipe.name}"))
        write_text(folder.recipe, recipe.to_yaml())
    path = folder.grid(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    details = {
        "sampler": tuned.sampler,
        "steps": tuned.steps,
        "nfe": tuned.nfe,
        "schedule": target.recipe.components["schedule"][0],
        "source": target.source,
        "objective": "mean squared distance to the reference from the same starting noise",
        "before": tuned.before,
        "after": tuned.after,
        "start_grid": tuned.start_grid,
        "start_times": tuned.start_times,
        "search_start": tuned.origin,
        "candidates": tuned.candidates,
        "reference": tuned.reference,
        "batch": tuned.batch,
        "seed": target.recipe.run.seed,
        "evaluations": tuned.evaluations,
        "seconds": tuned.seconds,
    }
    write_json(path, grid_record(name, tuned.times, **details))
    return path


def tune_command(
    source: str,
    overrides: list[str],
    *,
    nfe: int,
    sampler: Optional[str] = None,
    name: Optional[str] = None,
    reference_sampler: Optional[str] = None,
    batch: int = BATCH,
    iterations: int = ITERATIONS,
    reference_steps: int = REFERENCE_STEPS,
    console: Optional[Console] = None,
    trusted: tuple[str, ...] = (),
) -> Path:
    """``sandbox tune-steps``: tune, save, print the before/after and how to use it; return the file.
    ``trusted``: the local plugins named with ``--plugin`` that a run folder's recipe may load."""
    from sandbox.console import console as default_console

    console = console or default_console
    target = load_target(source, overrides, console, trusted)
    tuned = tune_grid(
        target,
        nfe,
        sampler=sampler,
        reference_sampler=reference_sampler,
        batch=batch,
        iterations=iterations,
        reference_steps=reference_steps,
        console=console,
    )
    path = save_grid(target, tuned, name)
    table = Table(
        title=f"{tuned.sampler} at NFE {tuned.nfe} ({tuned.steps} steps): mean squared distance to the reference "
        f"({tuned.reference['sampler']}, {tuned.reference['steps']} steps; its own error "
        f"{tuned.reference['self_error']:.2e})",
        title_justify="left",
    )
    for column in ("grid", f"tuning batch ({batch})", f"held-out batch ({batch})"):
        table.add_column(column, justify="right" if "batch" in column else "left")
    label = tuned.start_grid if isinstance(tuned.start_grid, str) else f"{len(tuned.start_grid)} times"
    table.add_row(f"{label} (own)", f"{tuned.before['train']:.3e}", f"{tuned.before['heldout']:.3e}")
    if tuned.origin != next(iter(tuned.candidates)):
        table.add_row(f"{tuned.origin} (search start)", f"{tuned.candidates[tuned.origin]:.3e}", "")
    table.add_row("tuned", f"{tuned.after['train']:.3e}", f"{tuned.after['heldout']:.3e}")
    console.print(table)
    console.print("times: " + ", ".join(f"{t:.4g}" for t in tuned.times))
    folder = path.parent.parent
    console.print(
        f"{tuned.evaluations} evaluations in {tuned.seconds:.1f} s; grid written to [bold]{escape(str(path))}[/]\n"
        f"use it: sandbox sample {escape(str(folder))} sampler.name={tuned.sampler} "
        f"sampler.steps={tuned.steps} sampler.grid={path.stem}  (a recipe: sampler.grid: {escape(str(path))})",
        soft_wrap=True,
    )
    return path
