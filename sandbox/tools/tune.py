"""``sandbox tune-steps``: a time grid tuned to a model, and ``sandbox doctor RUN_DIR``: which sampler for it.

A sampler at a fixed budget of network evaluations (NFE) makes an error that
depends on where on ``[0, 1]`` it spends them. :func:`tune_grid` searches the
grid's interior times for the one that brings the sampler's output closest to
a many-step reference solution of the same sampler from the same starting
noise, on a batch of the run's own starting noise (the first draws of
``run.seed +`` :data:`sandbox.engine.run.FINAL_SEED`, the noise ``sandbox sample``
starts from):

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
and the schedule's lowest time (:func:`sandbox.sampling.lowest_time`), so every
``z`` is a strictly descending grid with the same number of steps, hence the
same NFE. ``z`` starts at the best, on the tuning batch, of the sampler's own
grid and every registered grid with as many steps and the same NFE, and is
searched by Nelder-Mead (scipy, a dependency of scikit-learn); the best grid
seen is kept, the candidates included, so the tuned grid is never worse on the
batch it was tuned on than any of them. A second, held-out batch reports
whether the gain carries over to other noise.

The result is ``RUN_DIR/grids/<name>.json`` (times, sampler, NFE, the objective
before and after); ``sandbox sample RUN_DIR sampler.grid=<name>`` steps on it, and
a recipe uses it as ``sampler.grid: path/to/<name>.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sandbox.engine.build import Parts, build_parts
from sandbox.engine.precond import exact_denoise
from sandbox.engine.rundir import new_run_dir, read_json, write_json, write_text
from sandbox.errors import SandboxError
from sandbox.protocols import Denoise, Schedule
from sandbox.recipe import Recipe, load_recipe
from sandbox.registry import Component
from sandbox.sampling import CountingDenoise, brownian_path, grid_times, lowest_time, sampler_grid, scale_free

GRIDS = "grids"  # the run folder's subfolder of tuned grids
# fmt: off
BATCH = 256            # starting noise draws the grid is tuned on (and as many held out)
ITERATIONS = 200       # objective evaluations of the search
REFERENCE_STEPS = 500  # steps of the reference solution
TRAIN_PATH = 1         # seed of the Brownian path a stochastic sampler follows on the tuning batch
HELDOUT_PATH = 2       # and on the held-out batch
# fmt: on


@dataclass
class Target:
    """What a grid is tuned for: a run's EMA network, or an analytic recipe's exact denoiser."""

    # fmt: off
    recipe: Recipe
    parts: Parts
    denoise: Denoise
    run_dir: Optional[Path]     # the run folder; None for a recipe
    source: str                 # the run folder or recipe file given
    # fmt: on

    @property
    def registry(self) -> Any:
        return self.recipe.registry


def load_target(path: str | Path, overrides: list[str], console: Console) -> Target:
    """A run folder (its recipe and EMA weights, as ``sandbox sample`` loads them) or an analytic recipe."""
    from sandbox.engine.sample import ema_denoiser, find_checkpoint, resolve_run_grid, sampling_recipe

    path = Path(path)
    if path.is_dir():
        recipe = resolve_run_grid(path, sampling_recipe(path, overrides))
        run_dir: Optional[Path] = path
    elif path.is_file():
        recipe, run_dir = load_recipe(path, overrides), None
    else:
        raise SandboxError(f"{path}: no such run folder or recipe file")
    parts = build_parts(recipe)
    if recipe.run.threads or parts.exact_x0 is not None:  # an analytic denoiser: tiny ops, threads only stall
        torch.set_num_threads(recipe.run.threads or 1)
    denoise: Denoise
    if parts.exact_x0 is not None:
        denoise = exact_denoise(parts.exact_x0, parts.schedule, recipe.train.target, recipe.train.sigma_data)
    elif run_dir is None:
        raise SandboxError(
            f"{path} trains a network ({recipe.components['denoiser'][0]}); give the folder of a run of it "
            "(sandbox run first), whose EMA weights are then tuned for"
        )
    else:
        from sandbox.engine.device import pick_device

        ckpt, state = find_checkpoint(run_dir, None, console)
        denoise = ema_denoiser(recipe, parts, state, ckpt, pick_device(recipe.run.device))
    return Target(recipe, parts, denoise, run_dir, str(path))


# ------------------------------------------------------------------------------------------------ solver runs


def sampler_params(target: Target, name: Optional[str]) -> tuple[str, Component, Any]:
    """``(name, component, params)``: the recipe's sampler with its parameters, or ``name`` with its defaults
    and the recipe sampler's :data:`sandbox.engine.sample.CARRIED` settings where it has them.

    So samplers are compared under the run's own sampling settings: the quickstart's ``clip_x0: true``
    (its data lie in [-1, 1]) holds for every solver ranked or tuned on it, not only for its DDIM.
    """
    from sandbox.engine.sample import carried_settings

    own, own_params = target.recipe.components["sampler"]
    name = name or own
    component = target.registry.get("sampler", name, key="--sampler")
    fields = {f.name for f in dataclasses.fields(component.params)} if component.params is not None else set()
    if not {"steps", "grid"} <= fields:
        raise SandboxError(f"sampler '{name}' has no steps and grid parameters; it does not step on a time grid")
    params = own_params
    if name != own:
        params = component.default_params()
        params = with_values(params, **carried_settings(own_params, params))
    return name, component, params


def with_values(params: Any, **values: Any) -> Any:
    """A copy of ``params`` with ``values`` (checked again by the dataclass)."""
    return dataclasses.replace(params, **values)


def run_sampler(
    target: Target, component: Component, params: Any, noise: torch.Tensor, seed: int = 0, path: Optional[int] = None
) -> Any:
    """``(samples, NFE per sample)`` of the sampler with ``params`` from ``noise``; with ``path``, a sampler that
    draws its noise through :func:`sandbox.sampling.step_noise` follows that seed's Brownian path."""
    with torch.no_grad(), brownian_path(path) if path is not None else contextlib.nullcontext():
        sampler = _build(target, component, params)
        counter = CountingDenoise(target.denoise)
        device = next((p.device for p in getattr(target.denoise, "parameters", lambda: [])()), noise.device)
        out = sampler(
            counter, noise.to(device), target.parts.schedule, generator=torch.Generator(device).manual_seed(seed)
        )
    return out.double().cpu(), counter.nfe


def _build(target: Target, component: Component, params: Any) -> Any:
    from sandbox.registry import use_registry

    with use_registry(target.registry):
        return component.build(params)


def nfe_of(target: Target, component: Component, params: Any) -> int:
    sampler = _build(target, component, params)
    if hasattr(sampler, "nfe"):
        return int(sampler.nfe(target.parts.schedule))
    return run_sampler(target, component, params, torch.zeros(1, *target.parts.data.shape))[1]


def steps_for_nfe(target: Target, component: Component, params: Any, nfe: int) -> int:
    """The ``steps`` whose NFE is closest to ``nfe`` (ties: the smaller NFE)."""
    cache: dict[int, int] = {}

    def count(steps: int) -> int:
        if steps not in cache:
            cache[steps] = nfe_of(target, component, with_values(params, steps=steps))
        return cache[steps]

    guess = max(1, round(nfe / max(count(nfe) / nfe, 1e-9)))
    return min({max(1, guess + d) for d in (-2, -1, 0, 1, 2)}, key=lambda s: (abs(count(s) - nfe), count(s), s))


def is_deterministic(target: Target, component: Component, params: Any, path: Optional[int] = None) -> bool:
    """Whether the sampler's output from the same noise (with ``path``: and the same Brownian path) is the same
    under two different generator seeds."""
    noise = torch.randn(4, *target.parts.data.shape, generator=torch.Generator().manual_seed(0))
    small = with_values(params, steps=min(int(params.steps or 4), 4)) if params.steps else params
    a, _ = run_sampler(target, component, small, noise, seed=1, path=path)
    b, _ = run_sampler(target, component, small, noise, seed=2, path=path)
    return bool(torch.equal(a, b))


def follows_path(target: Target, component: Component, params: Any) -> bool:
    """Whether the sampler is deterministic given its starting noise and one Brownian path: an ODE solver, or a
    stochastic sampler that draws its noise through :func:`sandbox.sampling.step_noise`."""
    return is_deterministic(target, component, params, path=0)


def starting_noise(target: Target, n: int) -> torch.Tensor:
    """The first ``n`` draws of the noise ``sandbox sample`` starts from (``run.seed + FINAL_SEED``)."""
    from sandbox.engine.run import FINAL_SEED

    generator = torch.Generator().manual_seed(target.recipe.run.seed + FINAL_SEED)
    return torch.randn((n, *target.parts.data.shape), generator=generator)


def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean squared distance per coordinate; ``inf`` where either is not finite."""
    value = float(((a - b) ** 2).mean())
    return value if math.isfinite(value) else math.inf


@dataclass
class Reference:
    """A many-step solution from the same noise, and its own error (against half as many steps)."""

    # fmt: off
    sampler: str
    steps: int
    nfe: int
    grid: Any
    train: torch.Tensor                 # reference samples of the tuning batch (on the Brownian path TRAIN_PATH)
    heldout: torch.Tensor               # and of the held-out batch (HELDOUT_PATH)
    self_error: float                   # MSE between the reference and the same sampler at steps // 2
    # fmt: on


def reference(
    target: Target, name: Optional[str], steps: int, train: torch.Tensor, heldout: torch.Tensor
) -> Reference:
    """The sampler ``name`` (default the recipe's) at ``steps`` steps on its own grid: deterministic, or
    stochastic along the batches' Brownian paths."""
    name, component, params = sampler_params(target, name)
    if not follows_path(target, component, params):
        raise SandboxError(
            f"the reference sampler '{name}' draws its noise from its generator, not through "
            f"sandbox.sampling.step_noise; a reference from the same starting noise needs one that follows a "
            f"Brownian path: give --reference NAME (one of {', '.join(samplers_where(target, follows_path))})"
        )
    params = with_values(params, steps=steps)
    ref_train, nfe = run_sampler(target, component, params, train, path=TRAIN_PATH)
    ref_heldout = run_sampler(target, component, params, heldout, path=HELDOUT_PATH)[0] if len(heldout) else heldout
    half, half_nfe = run_sampler(
        target, component, with_values(params, steps=max(1, steps // 2)), train, path=TRAIN_PATH
    )
    # nan: half the steps is the same grid (a discrete schedule's every point), so no error estimate
    self_error = mse(half, ref_train) if half_nfe < nfe else math.nan
    return Reference(name, steps, nfe, params.grid, ref_train, ref_heldout, self_error)


def samplers_where(target: Target, keep: Callable[[Target, Component, Any], bool]) -> list[str]:
    """The registered samplers on a time grid that ``keep`` (:func:`is_deterministic`: the ODE solvers, whose
    output depends on no noise drawn as they step; :func:`follows_path`: the ones :func:`tune_grid` takes)."""
    names = []
    for name in target.registry.names("sampler"):
        try:
            _, component, params = sampler_params(target, name)
            if keep(target, component, params):
                names.append(name)
        except Exception:
            continue
    return names


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


def descending(times: list[float]) -> bool:
    return all(a > b for a, b in zip(times[:-1], times[1:])) and times[-1] == 0.0


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
    ref = reference(target, reference_sampler or name, reference_steps, train, heldout)

    batches = {"train": (train, ref.train, TRAIN_PATH), "heldout": (heldout, ref.heldout, HELDOUT_PATH)}

    def objective(times: list[float], batch_name: str = "train") -> float:
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
    from sandbox.registry import use_registry

    with use_registry(target.registry):
        return sampler_grid(params)


# ------------------------------------------------------------------------------------------------ saved grids


def grid_path(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / GRIDS / f"{name}.json"


def save_grid(target: Target, tuned: Tuned, name: Optional[str] = None) -> Path:
    """Write the grid as ``grids/<name>.json`` in the run folder (a recipe: in a new folder under ``run.output``
    holding the resolved recipe too, so ``sandbox sample`` takes it as a run folder)."""
    name = name or f"{tuned.sampler}-nfe{tuned.nfe}"
    from sandbox.params import time_grid

    try:
        time_grid(type("Name", (), {"grid": name})())  # the names a recipe's sampler.grid accepts
    except Exception:
        raise SandboxError(f"--name {name!r}: expected lowercase letters, digits, _ and - (a grid name)") from None
    folder = target.run_dir
    if folder is None:
        recipe = target.recipe
        folder = new_run_dir(recipe.run.output, f"tune-{recipe.name}")
        write_text(folder / "recipe.yaml", recipe.to_yaml())
    path = grid_path(folder, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    schedule = target.recipe.components["schedule"][0]
    write_json(
        path,
        {
            "name": name,
            "times": tuned.times,
            "sampler": tuned.sampler,
            "steps": tuned.steps,
            "nfe": tuned.nfe,
            "schedule": schedule,
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
        },
    )
    return path


def read_grid(path: str | Path) -> list[float]:
    """The ``times`` of a saved grid file (``sandbox tune-steps``'s JSON), checked."""
    data = read_json(Path(path))
    times = data.get("times") if isinstance(data, dict) else None
    if not isinstance(times, list) or len(times) < 2 or not descending([float(t) for t in times]) or times[0] > 1:
        raise SandboxError(f"{path}: expected a JSON object whose 'times' descend from at most 1 to exactly 0")
    return [float(t) for t in times]


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
) -> Path:
    """``sandbox tune-steps``: tune, save, print the before/after and how to use it; return the file."""
    from sandbox.console import console as default_console

    console = console or default_console
    target = load_target(source, overrides, console)
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


# ------------------------------------------------------------------------------------------------ ranking


@dataclass
class Ranked:
    # fmt: off
    sampler: str
    grid: str
    steps: Optional[int] = None
    nfe: Optional[int] = None
    error: float = math.nan                     # MSE to the reference (from the same noise)
    stochastic: bool = False                    # draws noise: its distance to the reference is not its error
    quality: dict[str, float] = field(default_factory=dict)   # the dataset's figures (evaluate) of the samples
    failure: str = ""
    # fmt: on


def rank(
    target: Target,
    nfe: int,
    *,
    samplers: Optional[list[str]] = None,
    grids: Optional[list[str]] = None,
    reference_sampler: Optional[str] = None,
    batch: int = BATCH,
    reference_steps: int = REFERENCE_STEPS,
    progress: Optional[Callable[[str], None]] = None,
) -> tuple[list[Ranked], Reference]:
    """Every sampler on a time grid x every grid (registered, and the run's tuned grids) at ``nfe``, against one
    many-step reference from the same noise; deterministic samplers first, best first."""
    registry = target.registry
    noise = starting_noise(target, batch)
    ref_name, ref_component, ref_params = sampler_params(target, reference_sampler)
    if not is_deterministic(target, ref_component, ref_params):
        raise SandboxError(
            f"the reference sampler '{ref_name}' draws noise as it steps; one reference for every sampler needs a "
            f"deterministic one: give --reference NAME (one of {', '.join(samplers_where(target, is_deterministic))})"
        )
    ref = reference(target, reference_sampler, reference_steps, noise, noise[:0].double())
    grid_names: list[Any] = list(grids or registry.names("grid"))
    if target.run_dir is not None and not grids:
        grid_names += [str(p) for p in sorted((target.run_dir / GRIDS).glob("*.json"))]
    rows: list[Ranked] = []
    evaluate = target.parts.data.evaluate
    for name in samplers or registry.names("sampler"):
        try:
            name, component, params = sampler_params(target, name)
        except SandboxError:
            continue
        stochastic = not is_deterministic(target, component, params)
        for grid in grid_names:
            label = Path(grid).stem + " (tuned)" if str(grid).endswith(".json") else str(grid)
            row = Ranked(name, label, stochastic=stochastic)
            rows.append(row)
            if progress:
                progress(f"{name} / {label}")
            try:
                value: Any = grid
                if str(grid).endswith(".json"):
                    saved = read_json(Path(grid)) or {}
                    if saved.get("sampler") != name or saved.get("nfe") != nfe:
                        rows.pop()  # a tuned grid goes with the sampler and NFE it was tuned for
                        continue
                    value = read_grid(grid)
                gridded = with_values(params, grid=value)
                steps = steps_for_nfe(target, component, gridded, nfe)
                out, row.nfe = run_sampler(target, component, with_values(gridded, steps=steps), noise, seed=1)
                row.steps = len(value) - 1 if isinstance(value, list) else steps  # a saved grid fixes its steps
                row.error = mse(out, ref.train)
                if evaluate is not None:
                    row.quality = {k: float(v) for k, v in evaluate(out.float()).items()}
            except Exception as exc:
                row.failure = f"{type(exc).__name__}: {exc}"
    rows.sort(key=lambda r: (bool(r.failure), r.stochastic, r.error if math.isfinite(r.error) else math.inf))
    return rows, ref


def render_rank(rows: list[Ranked], ref: Reference, nfe: int, batch: int) -> Table:
    metrics = sorted({k for row in rows for k in row.quality})
    table = Table(
        title=f"samplers x grids at NFE ~{nfe}: mean squared distance to the reference from the same noise "
        f"({ref.sampler}, {ref.steps} steps, its own error {ref.self_error:.1e}; {batch} samples)",
        title_justify="left",
    )
    for column in ("#", "sampler", "grid", "steps", "NFE", "MSE to reference", *metrics):
        table.add_column(column, justify="left" if column in ("sampler", "grid") else "right")
    for i, row in enumerate(rows, 1):
        if row.failure:
            error = f"[red]failed[/]: {escape(row.failure.splitlines()[0][:60])}"
        elif row.stochastic:
            error = f"[dim]{row.error:.2e} (draws noise)[/]"
        else:
            error = f"{row.error:.2e}"
        table.add_row(
            str(i),
            row.sampler,
            row.grid,
            str(row.steps if row.steps is not None else "-"),
            str(row.nfe if row.nfe is not None else "-"),
            error,
            *(f"{row.quality[m]:.4g}" if m in row.quality else "-" for m in metrics),
        )
    return table


def rank_command(
    source: str,
    overrides: list[str],
    *,
    nfe: int,
    samplers: Optional[list[str]] = None,
    grids: Optional[list[str]] = None,
    reference_sampler: Optional[str] = None,
    batch: int = BATCH,
    reference_steps: int = REFERENCE_STEPS,
    console: Optional[Console] = None,
) -> int:
    """``sandbox doctor RUN_DIR --nfe N``: print the ranking; exit status 1 if a combination failed."""
    from sandbox.console import console as default_console
    from sandbox.console import counter

    console = console or default_console
    target = load_target(source, overrides, console)
    bar = counter(console, transient=True)
    with bar:
        task = bar.add_task("rank", total=None)
        rows, ref = rank(
            target,
            nfe,
            samplers=samplers,
            grids=grids,
            reference_sampler=reference_sampler,
            batch=batch,
            reference_steps=reference_steps,
            progress=lambda text: bar.update(task, description=f"rank: {text}", advance=1),
        )
    console.print(render_rank(rows, ref, nfe, batch))
    console.print(
        "Deterministic samplers first, best first; a sampler that draws noise is compared by the dataset's "
        "figures, not by its distance to the reference.",
        soft_wrap=True,
    )
    return 1 if any(row.failure for row in rows) else 0
