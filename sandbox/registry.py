"""The component registry: which plugin provided which dataset, schedule, denoiser, sampler.

Calling convention of ``build`` for each kind (one per kind):

===========  ====================================================================
kind         ``build`` call and result
===========  ====================================================================
dataset      ``build(params) -> sandbox.data.DataSplits``
schedule     ``build(params) -> sandbox.schedule.Schedule``
denoiser     ``build(params, shape) -> torch.nn.Module``; ``forward(x, c_noise)``
sampler      ``build(params) -> sandbox.sampling.Sampler``
===========  ====================================================================

``params`` is an instance of the dataclass given at registration (or
``None`` when the component takes no parameters).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from sandbox.errors import RegistryError
from sandbox.plugins import (PluginFailure, PluginInfo, load_entry_points, load_local_plugins,
                             new_plugin_manager)

KINDS = ("dataset", "schedule", "denoiser", "sampler")
HOOKS = {kind: f"register_{kind}s" for kind in KINDS}
_NAME = re.compile(r"^[a-z][a-z0-9_\-]*$")


@dataclass(frozen=True)
class Component:
    """One registered component."""

    kind: str
    name: str
    build_ref: Callable[..., Any] | str
    params: type | None
    description: str
    plugin: str
    distribution: str | None = None
    version: str | None = None

    @property
    def provider(self) -> str:
        """``distribution version`` when known, else the plugin name."""
        if self.distribution:
            return f"{self.distribution} {self.version or ''}".strip()
        return self.plugin

    def resolve(self) -> Callable[..., Any]:
        """Import a lazy ``"module:attr"`` build reference."""
        if callable(self.build_ref):
            return self.build_ref
        module_name, _, attr = self.build_ref.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise RegistryError(
                f"{self.kind} '{self.name}' from plugin '{self.plugin}' points at "
                f"'{self.build_ref}', which cannot be imported: {exc}"
            ) from exc
        return obj

    def default_params(self) -> Any:
        return self.params() if self.params is not None else None

    def build(self, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        if params is None:
            params = self.default_params()
        return self.resolve()(params, *args, **kwargs)


def _describe(build: Any, params: type | None, description: str | None) -> str:
    if description:
        return description.strip().splitlines()[0]
    for source in (params, build if callable(build) else None):
        doc = getattr(source, "__doc__", None)
        if doc and source is not None and not (isinstance(source, type) and doc.startswith(source.__name__ + "(")):
            return doc.strip().splitlines()[0]
    return ""


@dataclass
class Registry:
    """Every registered component, by kind and name."""

    components: dict[str, dict[str, Component]] = field(default_factory=lambda: {k: {} for k in KINDS})
    plugins: list[PluginInfo] = field(default_factory=list)
    failures: list[PluginFailure] = field(default_factory=list)

    def add(self, component: Component) -> None:
        table = self.components[component.kind]
        if component.name in table:
            other = table[component.name]
            raise RegistryError(
                f"two {component.kind}s are named '{component.name}': one from "
                f"{other.plugin} ({other.provider}) and one from {component.plugin} "
                f"({component.provider}); a name must mean one thing, so uninstall or "
                "rename one of them"
            )
        table[component.name] = component

    def copy(self) -> "Registry":
        """A registry with the same components, plugins and failures, safe to extend."""
        return Registry({kind: dict(table) for kind, table in self.components.items()},
                        list(self.plugins), list(self.failures))

    def names(self, kind: str) -> list[str]:
        return sorted(self.components[kind])

    def get(self, kind: str, name: str, *, key: str | None = None) -> Component:
        table = self.components[kind]
        if name in table:
            return table[name]
        where = f"recipe key '{key}': " if key else ""
        close = difflib.get_close_matches(str(name), list(table), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        known = ", ".join(self.names(kind)) or "none"
        broken = ""
        if self.failures:
            broken = " Plugins that failed to load: " + "; ".join(
                f"{f.distribution} ({f.reason})" for f in self.failures
            ) + "."
        raise RegistryError(
            f"{where}unknown {kind} '{name}'. Registered {kind}s: {known}.{hint}{broken}"
        )

    def __iter__(self):
        for kind in KINDS:
            yield from (self.components[kind][n] for n in self.names(kind))


def make_register(registry: Registry, kind: str, plugin: PluginInfo) -> Callable[..., None]:
    """The ``register`` callable handed to one plugin's hook for one kind."""

    def register(
        name: str,
        build: Callable[..., Any] | str,
        *,
        params: type | None = None,
        description: str | None = None,
    ) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise RegistryError(
                f"plugin '{plugin.name}' registered a {kind} named {name!r}: a name must be "
                "lower-case letters, digits, '_' or '-', starting with a letter"
            )
        if not (callable(build) or (isinstance(build, str) and ":" in build)):
            raise RegistryError(
                f"plugin '{plugin.name}' registered {kind} '{name}' with build={build!r}: "
                "expected a callable or a 'module:attr' string"
            )
        if params is not None and not dataclasses.is_dataclass(params):
            raise RegistryError(
                f"plugin '{plugin.name}' registered {kind} '{name}' with params={params!r}: "
                "expected a dataclass type"
            )
        registry.add(
            Component(
                kind=kind,
                name=name,
                build_ref=build,
                params=params,
                description=_describe(build, params, description),
                plugin=plugin.name,
                distribution=plugin.distribution,
                version=plugin.version,
            )
        )

    return register


def collect(pm, plugins: list[PluginInfo] | None = None, failures: list[PluginFailure] | None = None, *,
            into: Registry | None = None) -> Registry:
    """Call every plugin's hooks, one plugin at a time, so each record names its provider.

    A plugin whose hook raises (an invalid registration or any other error)
    is recorded in ``failures`` and what it registered is dropped; the rest
    keeps working. ``into`` extends an existing registry instead of a new one.
    """
    registry = into if into is not None else Registry()
    registry.plugins.extend(plugins or [])
    registry.failures.extend(failures or [])
    info = {p.name: p for p in registry.plugins}
    for plugin_name, plugin in sorted(pm.list_name_plugin(), key=lambda item: str(item[0])):
        if plugin is None:
            continue
        plugin_info = info.get(plugin_name) or PluginInfo(str(plugin_name), None, None)
        if plugin_name not in info:
            registry.plugins.append(plugin_info)
        others = [p for p in pm.get_plugins() if p is not plugin]
        before = {kind: set(registry.components[kind]) for kind in KINDS}
        try:
            for kind in KINDS:
                caller = pm.subset_hook_caller(HOOKS[kind], remove_plugins=others)
                caller(register=make_register(registry, kind, plugin_info))
        except Exception as exc:  # noqa: BLE001 - a broken plugin is reported, the rest keeps working
            if isinstance(exc, RegistryError) and str(exc).startswith("two "):
                raise  # a duplicate name is an error for the whole sandbox
            for kind in KINDS:  # drop what the broken plugin managed to register
                for name in set(registry.components[kind]) - before[kind]:
                    del registry.components[kind][name]
            reason = str(exc) if isinstance(exc, RegistryError) else f"{type(exc).__name__}: {exc}"
            registry.failures.append(
                PluginFailure(plugin_info.distribution or plugin_info.name, plugin_info.name, reason)
            )
    return registry


def registry_with(specs: Iterable[str], base: Registry | None = None) -> Registry:
    """``base`` (default: :func:`get_registry`) plus local plugin modules, each registered as ``local:<spec>``.

    ``specs`` are module names or absolute file paths (see
    :func:`sandbox.plugins.import_local`). ``base`` is left unchanged; a
    local plugin that fails to import or register is in the result's
    ``failures`` under its plugin name.
    """
    registry = (base if base is not None else get_registry()).copy()
    pm = new_plugin_manager()
    loaded, failures = load_local_plugins(pm, specs)
    return collect(pm, loaded, failures, into=registry)


_REGISTRY: Registry | None = None


def get_registry(*, reload: bool = False) -> Registry:
    """The process-wide registry, built once from the installed plugins."""
    global _REGISTRY
    if _REGISTRY is None or reload:
        pm = new_plugin_manager()
        loaded, failures = load_entry_points(pm)
        _REGISTRY = collect(pm, loaded, failures)
    return _REGISTRY
