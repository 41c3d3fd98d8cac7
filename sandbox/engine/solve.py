"""Running a run's samplers against a reference: what ``sandbox tune-steps`` and ``sandbox doctor RUN_DIR`` share.

A :class:`Target` is what is sampled: a run's EMA network (loaded as ``sandbox
sample`` loads it) or an analytic recipe's exact denoiser. Its samplers run
from the noise ``sandbox sample`` starts from (:func:`starting_noise`), under
the run's own sampling settings (:func:`sampler_params`), and are compared by
their mean squared distance (:func:`mse`) to a many-step :func:`reference`
from the same noise. A stochastic sampler that draws its noise through
:func:`sandbox.sampling.step_noise` follows one Brownian path per batch
(:func:`sandbox.sampling.brownian_path`; ``path`` below), so its output is a
function of its starting noise and grid, as an ODE solver's is; a batch is split
over several paths (:data:`TRAIN_PATHS`, :data:`HELDOUT_PATHS`), so a grid is not
scored on one path's accidents.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from rich.console import Console

from sandbox.engine.build import Parts, build_parts
from sandbox.engine.device import apply_threads, pick_device
from sandbox.engine.generate import FINAL_SEED
from sandbox.engine.precond import exact_denoise
from sandbox.engine.sample import carried_settings, ema_denoiser, find_checkpoint, resolve_run_grid, sampling_recipe
from sandbox.errors import SandboxError
from sandbox.protocols import Denoise
from sandbox.recipe import Recipe, load_recipe
from sandbox.registry import Component, use_registry
from sandbox.sampling import CountingDenoise, brownian_path, nfe_for_steps, steps_for_budget

# fmt: off
BATCH = 256            # starting noise draws compared on (tune-steps: tuned on, and as many held out)
REFERENCE_STEPS = 500  # steps of the reference solution
TRAIN_PATHS = (1, 3, 5, 7)    # seeds of the Brownian paths a stochastic sampler follows on the tuning batch
HELDOUT_PATHS = (2, 4, 6, 8)  # and on the held-out batch (each path: an equal share of the batch)
# fmt: on


@dataclass
class Target:
    """What is sampled: a run's EMA network, or an analytic recipe's exact denoiser."""

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

    @property
    def device(self) -> Optional[torch.device]:
        """Where the network's weights are (None: an analytic denoiser, no weights)."""
        return next((p.device for p in getattr(self.denoise, "parameters", lambda: [])()), None)


def load_target(path: str | Path, overrides: list[str], console: Console, trusted: Iterable[str] = ()) -> Target:
    """A run folder (its recipe and EMA weights, as ``sandbox sample`` loads them, its local plugins only as
    ``trusted`` allows) or an analytic recipe (named by the user, so its plugins load)."""
    path = Path(path)
    if path.is_dir():
        recipe = resolve_run_grid(path, sampling_recipe(path, overrides, trusted))
        run_dir: Optional[Path] = path
    elif path.is_file():
        recipe, run_dir = load_recipe(path, overrides), None
    else:
        raise SandboxError(f"{path}: no such run folder or recipe file")
    parts = build_parts(recipe)
    if parts.exact_x0 is not None:  # an analytic denoiser: tiny ops, threads only stall
        torch.set_num_threads(recipe.run.threads or 1)
    else:
        apply_threads(recipe.run.threads)  # 0: the idle cores, one on a busy machine
    denoise: Denoise
    if parts.exact_x0 is not None:
        denoise = exact_denoise(parts.exact_x0, parts.schedule, recipe.train.target, recipe.train.sigma_data)
    elif run_dir is None:
        raise SandboxError(
            f"{path} trains a network ({recipe.components['denoiser'][0]}); give the folder of a run of it "
            "(sandbox run first), whose EMA weights are then tuned for"
        )
    else:
        ckpt, state = find_checkpoint(run_dir, None, console)
        denoise = ema_denoiser(recipe, parts, state, ckpt, pick_device(recipe.run.device))
    return Target(recipe, parts, denoise, run_dir, str(path))


# ------------------------------------------------------------------------------------------------ sampler runs


def sampler_params(target: Target, name: Optional[str]) -> tuple[str, Component, Any]:
    """``(name, component, params)``: the recipe's sampler with its parameters, or ``name`` with its defaults
    and the recipe sampler's :data:`sandbox.engine.sample.CARRIED` settings where it has them.

    So samplers are compared under the run's own sampling settings: the quickstart's ``clip_x0: true``
    (its data lie in [-1, 1]) holds for every solver ranked or tuned on it, not only for its DDIM.
    """
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


def build_sampler(target: Target, component: Component, params: Any) -> Any:
    """The sampler, its grid resolved in the target's registry."""
    with use_registry(target.registry):
        return component.build(params)


def run_sampler(
    target: Target,
    component: Component,
    params: Any,
    noise: torch.Tensor,
    seed: int = 0,
    path: Optional[int | Sequence[int]] = None,
) -> Any:
    """``(samples, NFE per sample)`` of the sampler with ``params`` from ``noise``; with ``path``, a sampler that
    draws its noise through :func:`sandbox.sampling.step_noise` follows that seed's Brownian path, and with
    several seeds the batch is split into as many equal parts (``torch.chunk``), one path each."""
    if path is not None and not isinstance(path, int):
        parts = torch.chunk(noise, len(path)) if len(noise) else (noise,)
        runs = [run_sampler(target, component, params, part, seed, p) for part, p in zip(parts, path)]
        return torch.cat([out for out, _ in runs]), runs[0][1]
    with torch.no_grad(), brownian_path(path) if path is not None else contextlib.nullcontext():
        sampler = build_sampler(target, component, params)
        counter = CountingDenoise(target.denoise)
        device = target.device or noise.device
        out = sampler(
            counter, noise.to(device), target.parts.schedule, generator=torch.Generator(device).manual_seed(seed)
        )
    return out.double().cpu(), counter.nfe


def nfe_of(target: Target, component: Component, params: Any) -> int:
    """NFE per sample of the sampler with ``params`` (:func:`sandbox.sampling.nfe_for_steps` on the target)."""
    schedule, shape = target.parts.schedule, target.parts.data.shape
    return nfe_for_steps(component, schedule, None, target.denoise, shape, **_on(target, params))


def steps_for_nfe(target: Target, component: Component, params: Any, nfe: int) -> int:
    """The ``steps`` whose NFE is closest to ``nfe`` (:func:`sandbox.sampling.steps_for_budget` on the target)."""
    schedule, shape = target.parts.schedule, target.parts.data.shape
    return steps_for_budget(component, schedule, nfe, target.denoise, shape, **_on(target, params))


def _on(target: Target, params: Any) -> dict[str, Any]:
    return {"params": params, "registry": target.registry, "device": target.device}


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


def require_path(target: Target, name: str, component: Component, params: Any, role: str, need: str) -> None:
    """Refuse a sampler that does not :func:`follow a path <follows_path>`, naming ``role`` and what ``need`` asks,
    and the samplers that would do."""
    if not follows_path(target, component, params):
        raise SandboxError(
            f"{role} draws noise from its generator as it steps (not through sandbox.sampling.step_noise); {need} "
            f"(one of {', '.join(samplers_where(target, follows_path))})"
        )


def samplers_where(target: Target, keep: Callable[[Target, Component, Any], bool]) -> list[str]:
    """The registered samplers on a time grid that ``keep`` (:func:`is_deterministic`: the ODE solvers, whose
    output depends on no noise drawn as they step; :func:`follows_path`: the ones ``sandbox tune-steps`` takes)."""
    names = []
    for name in target.registry.names("sampler"):
        try:
            _, component, params = sampler_params(target, name)
            if keep(target, component, params):
                names.append(name)
        except Exception:
            continue
    return names


# ------------------------------------------------------------------------------------------------ the reference


def starting_noise(target: Target, n: int) -> torch.Tensor:
    """The first ``n`` draws of the noise ``sandbox sample`` starts from (``run.seed + FINAL_SEED``)."""
    generator = torch.Generator().manual_seed(target.recipe.run.seed + FINAL_SEED)
    return torch.randn((n, *target.parts.data.shape), generator=generator)


def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean squared distance per coordinate; ``inf`` where either is not finite."""
    value = float(((a - b) ** 2).mean())
    return value if math.isfinite(value) else math.inf


def sample_errors(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Each sample's mean squared distance per coordinate (its mean over the batch is :func:`mse`)."""
    return ((a.double() - b.double()) ** 2).flatten(1).mean(1)


@dataclass
class Reference:
    """A many-step solution from the same noise, and its own error (against half as many steps)."""

    # fmt: off
    sampler: str
    steps: int
    nfe: int
    grid: Any
    train: torch.Tensor                 # reference samples of the tuning batch (on the Brownian paths TRAIN_PATHS)
    heldout: torch.Tensor               # and of the held-out batch (HELDOUT_PATHS)
    self_error: float                   # MSE between the reference and the same sampler at steps // 2
    # fmt: on


def reference_solver(target: Target, name: Optional[str], steps: int) -> tuple[str, Component, Any]:
    """``(name, component, params)`` of the reference: the sampler ``name`` at ``steps`` steps on its own grid,
    refused where its output is no function of the starting noise and a Brownian path."""
    name, component, params = sampler_params(target, name)
    require_path(
        target,
        name,
        component,
        params,
        f"the reference sampler '{name}'",
        "a reference from the same starting noise needs one that follows a Brownian path: give --reference NAME",
    )
    return name, component, with_values(params, steps=steps)


def reference(
    target: Target, name: Optional[str], steps: int, train: torch.Tensor, heldout: torch.Tensor
) -> Reference:
    """The sampler ``name`` (default the recipe's) at ``steps`` steps on its own grid: deterministic, or
    stochastic along the batches' Brownian paths."""
    name, component, params = reference_solver(target, name, steps)
    stochastic = not is_deterministic(target, component, params)
    train_paths, heldout_paths = (TRAIN_PATHS, HELDOUT_PATHS) if stochastic else (None, None)
    ref_train, nfe = run_sampler(target, component, params, train, path=train_paths)
    ref_heldout = run_sampler(target, component, params, heldout, path=heldout_paths)[0] if len(heldout) else heldout
    half, half_nfe = run_sampler(
        target, component, with_values(params, steps=max(1, steps // 2)), train, path=train_paths
    )
    # nan: half the steps is the same grid (a discrete schedule's every point), so no error estimate
    self_error = mse(half, ref_train) if half_nfe < nfe else math.nan
    return Reference(name, steps, nfe, params.grid, ref_train, ref_heldout, self_error)
