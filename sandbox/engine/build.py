"""Turn a validated recipe into live components, through the registry only, and check each against its protocol."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

import torch

from sandbox.contract import PROBLEMS, is_analytic
from sandbox.errors import ContractError, ParameterError, RecipeError, SandboxError
from sandbox.protocols import DataSplits, ExactX0, Sampler, Schedule
from sandbox.recipe import Recipe
from sandbox.registry import Component, Registry, use_registry


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
    # fmt: on


def build_component(component: Component, params: Any, *args: Any) -> Any:
    """``component.build(params, *args)``, checked against its kind's protocol; errors name the plugin."""
    where = f"{component.kind} '{component.name}' from {component.provider}"
    try:
        built = component.build(params, *args)
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
    schedule = build_component(comps["schedule"], params["schedule"])
    denoiser = build_component(comps["denoiser"], params["denoiser"], tuple(data.shape))
    exact_x0 = None
    if is_analytic(denoiser):
        try:
            exact_x0, denoiser = denoiser.bind(data), None
        except ParameterError as exc:
            raise RecipeError(f"{exc.in_section('denoiser')} ({comps['denoiser'].provider})") from exc
    with use_registry(registry):  # a sampler's time grid (sampler.grid) comes from the same registry
        sampler = build_component(comps["sampler"], params["sampler"])
    return Parts(data=data, schedule=schedule, net=denoiser, exact_x0=exact_x0, sampler=sampler, components=comps)


def count_parameters(module: Optional[torch.nn.Module]) -> int:
    return sum(p.numel() for p in module.parameters()) if module is not None else 0
