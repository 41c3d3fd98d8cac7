"""Turn a validated recipe into live components, through the registry only."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from sandbox.data import DataSplits
from sandbox.errors import RecipeError, SandboxError
from sandbox.recipe import Recipe
from sandbox.registry import Component, Registry


@dataclass
class Parts:
    """Everything a run needs, built from a recipe."""

    data: DataSplits
    schedule: Any
    net: torch.nn.Module
    sampler: Any
    components: dict[str, Component]


def _build(component: Component, params: Any, *args: Any) -> Any:
    try:
        return component.build(params, *args)
    except SandboxError:
        raise
    except Exception as exc:  # a plugin's own error: say which plugin, keep the reason
        raise SandboxError(
            f"{component.kind} '{component.name}' from {component.plugin} failed to build "
            f"with {asdict(params) if params is not None else {}}: {type(exc).__name__}: {exc}"
        ) from exc


def build_parts(recipe: Recipe, registry: Registry) -> Parts:
    comps = {kind: registry.get(kind, name, key=f"{kind}.name") for kind, (name, _) in recipe.components.items()}
    params = {kind: p for kind, (_, p) in recipe.components.items()}
    data = _build(comps["dataset"], params["dataset"])
    if not isinstance(data, DataSplits):
        raise SandboxError(f"dataset '{comps['dataset'].name}' returned {type(data).__name__}; expected sandbox.data.DataSplits")
    if len(data.train) == 0 or len(data.val) == 0:
        raise RecipeError(f"recipe key 'dataset': '{comps['dataset'].name}' has an empty train or validation split")
    schedule = _build(comps["schedule"], params["schedule"])
    net = _build(comps["denoiser"], params["denoiser"], tuple(data.shape))
    if hasattr(net, "bind_data"):  # analytic denoisers read the data's closed form
        net.bind_data(data)
    sampler = _build(comps["sampler"], params["sampler"])
    return Parts(data=data, schedule=schedule, net=net, sampler=sampler, components=comps)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
