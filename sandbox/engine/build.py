"""Turn a validated recipe into live components, through the registry only, and check each against its protocol."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Optional

import torch

from sandbox.contract import PROBLEMS, conditional_denoiser_problems, is_analytic, takes_classes
from sandbox.engine.condition import check_conditional
from sandbox.errors import ContractError, ParameterError, RecipeError, SandboxError
from sandbox.protocols import DataSplits, ExactX0, Guidance, Sampler, Schedule, first_tensor, item_label
from sandbox.recipe import Recipe
from sandbox.registry import Component, Registry, use_registry

#: the sampler's working set, in batches of ``eval.sample_batch`` items (x_t, the denoised estimate, noise,
#: a multistep sampler's history), counted on top of the samples themselves
SAMPLER_BATCHES = 8


@dataclass
class Parts:
    """Everything a run needs, built from a recipe: a network to train, or an exact denoiser."""

    # fmt: off
    data: DataSplits
    schedule: Schedule
    net: Optional[torch.nn.Module]      # the denoiser network to train; None for an analytic denoiser
    exact_x0: Optional[ExactX0]         # the analytic denoiser's exact E[x0 | x_t]; None for a network
    sampler: Sampler
    components: dict[str, Component]
    classes: int = 0                    # classes of a class-conditional run (train.conditional); 0: unconditional
    guidance: Optional[Guidance] = None  # the recipe's guidance: section, built
    guide: Optional[Callable[..., torch.Tensor]] = None  # autoguidance's guiding model, once loaded (engine.guide)
    # fmt: on


def build_component(component: Component, params: Any, *args: Any, **kwargs: Any) -> Any:
    """``component.build(params, *args, **kwargs)``, checked against its kind's protocol; errors name the plugin."""
    where = f"{component.kind} '{component.name}' from {component.provider}"
    try:
        built = component.build(params, *args, **kwargs)
    except SandboxError:
        raise
    except ParameterError as exc:  # a check that needs the data (an item shape) failed at build time
        raise RecipeError(f"{exc.in_section(component.kind)} ({where})") from exc
    except Exception as exc:  # a plugin's own error: say which plugin, keep the reason
        raise SandboxError(
            f"{where} failed to build with {asdict(params) if params is not None else {}}: {type(exc).__name__}: {exc}"
        ) from exc
    problems = PROBLEMS[component.kind](built)
    if problems:
        raise ContractError(
            f"{where} does not follow the {component.kind} protocol (sandbox.protocols): " + "; ".join(problems)
        )
    return built


def build_parts(recipe: Recipe, registry: Optional[Registry] = None) -> Parts:
    """Build the recipe's dataset, schedule, denoiser and sampler (``registry``: the recipe's own by default)."""
    registry = registry or recipe.registry
    if registry is None:
        raise SandboxError("the recipe carries no registry: load it with sandbox.recipe.load_recipe")
    comps = {kind: registry.get(kind, name, key=f"{kind}.name") for kind, (name, _) in recipe.components.items()}
    params = {kind: p for kind, (_, p) in recipe.components.items()}
    data = build_component(comps["dataset"], params["dataset"])
    guidance = None
    if recipe.guidance is not None:
        comps["guidance"] = registry.get("guidance", recipe.guidance[0], key="guidance.name")
        guidance = build_component(comps["guidance"], recipe.guidance[1])
    classes = check_conditional(recipe, data, guidance, comps["dataset"].provider)
    schedule = build_component(comps["schedule"], params["schedule"])
    denoiser = build_denoiser(comps["denoiser"], params["denoiser"], tuple(data.shape), classes)
    exact_x0 = None
    if is_analytic(denoiser):
        try:
            exact_x0, denoiser = denoiser.bind(data), None
        except ParameterError as exc:
            raise RecipeError(f"{exc.in_section('denoiser')} ({comps['denoiser'].provider})") from exc
    check_sample_memory(recipe, tuple(data.shape))
    with use_registry(registry):  # a sampler's time grid (sampler.grid) comes from the same registry
        sampler = build_component(comps["sampler"], params["sampler"])
    return Parts(
        data=data,
        schedule=schedule,
        net=denoiser,
        exact_x0=exact_x0,
        sampler=sampler,
        components=comps,
        classes=classes,
        guidance=guidance,
    )


def build_denoiser(component: Component, params: Any, shape: tuple[int, ...], classes: int) -> Any:
    """The denoiser for items of ``shape``; with ``classes`` (a conditional run) built with ``num_classes``, and
    refused before any training, naming the plugin, when its ``build`` cannot take one (an analytic denoiser
    needs none: the dataset's exact denoiser takes the labels)."""
    if not classes:
        return build_component(component, params, shape)
    where = f"denoiser '{component.name}' from {component.provider}"
    if not takes_classes(component.resolve()):
        built = build_component(component, params, shape)
        if is_analytic(built):
            return built
        raise RecipeError(
            f"recipe key 'train.conditional': True, but {where} cannot take a condition: its build has no "
            "num_classes argument (sandbox.protocols.DenoiserNetwork); use a denoiser that takes one, or set "
            "train.conditional=false"
        )
    built = build_component(component, params, shape, num_classes=classes)
    problems = conditional_denoiser_problems(built)
    if problems:
        raise ContractError(
            f"{where} does not follow the denoiser protocol (sandbox.protocols): " + "; ".join(problems)
        )
    return built


def count_parameters(module: Optional[torch.nn.Module]) -> int:
    return sum(p.numel() for p in module.parameters()) if module is not None else 0


def available_memory() -> Optional[int]:
    """Bytes of memory available to this process: ``MemAvailable`` of /proc/meminfo, else the physical
    memory (``os.sysconf``); None where neither can be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return None


def check_sample_memory(recipe: Recipe, shape: tuple[int, ...]) -> None:
    """Refuse ``eval.num_samples`` when the final samples would not fit in memory, before any work.

    The samples are float32 and held twice while the batches are joined (``torch.cat``), plus the
    sampler's working set of :data:`SAMPLER_BATCHES` batches.
    """
    available = available_memory()
    if available is None:
        return
    item = 4 * math.prod(shape)
    n, batch = recipe.eval.num_samples, min(recipe.eval.sample_batch, recipe.eval.num_samples)
    samples, working = 2 * n * item, SAMPLER_BATCHES * batch * item
    if samples + working <= available:
        return
    most = max((available - working) // (2 * item), 0)
    raise RecipeError(
        ParameterError(
            "num_samples",
            n,
            f"a number of samples that fits in memory: {n:,} samples of shape {tuple(shape)} take "
            f"{_gb(samples)} as float32 (twice {_gb(samples // 2)}: the batches and their join) plus "
            f"{_gb(working)} for the sampler, but {_gb(available)} is available; lower eval.num_samples "
            f"(about {most:,} fit here)",
        ).in_section("eval")
    )


def _gb(size: int) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e8 else f"{size / 1e6:.1f} MB"


def real_heldout(parts: Parts, n: int, split: str = "val") -> torch.Tensor:
    """The first ``n`` items of the validation split (all of them when it is smaller), as one float tensor;
    ``split="train"``: of the training split."""
    items = parts.data.train if split == "train" else parts.data.val
    return torch.stack([first_tensor(items[i]) for i in range(min(n, len(items)))]).float()


def heldout_labels(parts: Parts, n: int) -> torch.Tensor:
    """The labels of the items :func:`real_heldout` returns (a labelled dataset)."""
    return torch.stack([item_label(parts.data.val[i]) for i in range(min(n, len(parts.data.val)))])
