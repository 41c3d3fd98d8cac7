"""Building the component a check is given: a registered name through the registry, or an object as it is."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from sandbox.plugins import SELF_DISTRIBUTION
from sandbox.registry import Registry, get_registry


def expect(condition: Any, label: str, message: str) -> None:
    if not condition:
        raise AssertionError(f"{label}: {message}")


def built(kind: str, component: Any, params: Any, registry: Registry | None, *args: Any) -> tuple[Any, str]:
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


def built_all(kind: str, registry: Registry | None, names: Sequence[str] | None) -> list[tuple[str, Any]]:
    registry = registry or get_registry()
    chosen = built_in(registry, kind) if names is None else names
    return [(name, registry.get(kind, name).build()) for name in chosen]
