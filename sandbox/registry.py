"""The component registry: which plugin provided which dataset, schedule, denoiser, sampler, time grid.

What each kind's ``build`` receives and returns is stated once, in
:mod:`sandbox.protocols`.

A name means one thing. When two plugins register one name in one kind,
that name is disabled (listed by ``sandbox list`` and ``sandbox plugins``
with both providers; a recipe naming it stops with
:class:`sandbox.errors.DuplicateComponentError`) and everything else keeps
working. To override a component on purpose, name the provider to prefer in
``SANDBOX_PREFER`` (a distribution name, a plugin name, or a local plugin's
file name), e.g. ``SANDBOX_PREFER=my-schedules``.

The registry in use is :func:`get_registry`: the installed plugins', built
once, unless a block runs under :func:`use_registry` (one context variable,
which the test helpers of :mod:`sandbox.testing` set).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import difflib
import importlib
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import pluggy

from sandbox.errors import DuplicateComponentError, RegistryError
from sandbox.plugins import (
    LOCAL_PREFIX,
    Loaded,
    PluginFailure,
    PluginInfo,
    load_entry_points,
    load_local_plugins,
    new_plugin_manager,
)

if TYPE_CHECKING:
    from sandbox.protocols import Build, Register

#: the kinds a recipe chooses, one section each (``dataset: {name: ...}``)
KINDS = ("dataset", "schedule", "denoiser", "sampler")
#: every registered kind: the recipe sections, time grids, which a sampler section names (``sampler.grid``),
#: sweep launchers (``sandbox sweep --launcher``, configured by the recipe's optional ``launcher:`` section)
#: loggers (``run.loggers``), which receive the run's events, and guidance methods (the recipe's optional
#: ``guidance:`` section), which steer sampling
ALL_KINDS = (*KINDS, "guidance", "grid", "launcher", "logger")
HOOKS = {kind: f"register_{kind}" + ("" if kind == "guidance" else "s") for kind in ALL_KINDS}
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


def preferred() -> tuple[str, ...]:
    """``SANDBOX_PREFER`` as lower-case provider names."""
    return tuple(p.strip().lower() for p in os.environ.get("SANDBOX_PREFER", "").split(",") if p.strip())


def _matches(component: Component, names: tuple[str, ...]) -> bool:
    keys = {component.plugin.lower(), (component.distribution or "").lower()}
    if component.plugin.startswith(LOCAL_PREFIX):
        path = Path(component.plugin[len(LOCAL_PREFIX) :])
        keys |= {path.name.lower(), path.stem.lower()}
    return bool(keys & set(names))


@dataclass
class Registry:
    """Every registered component, by kind and name; clashing names are kept aside, not usable."""

    components: dict[str, dict[str, Component]] = field(default_factory=lambda: {k: {} for k in ALL_KINDS})
    plugins: list[PluginInfo] = field(default_factory=list)
    failures: list[PluginFailure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    clashes: dict[str, dict[str, list[Component]]] = field(default_factory=lambda: {k: {} for k in ALL_KINDS})

    def add(self, component: Component) -> None:
        """Record ``component``; a second component of the same kind and name starts a clash."""
        table, clashes = self.components[component.kind], self.clashes[component.kind]
        name = component.name
        if name not in clashes and name not in table:
            table[name] = component
            return
        clashes.setdefault(name, [table[name]] if name in table else []).append(component)
        winners = [c for c in clashes[name] if _matches(c, preferred())]  # SANDBOX_PREFER as it is now
        if len(winners) == 1:
            table[name] = winners[0]
        else:
            table.pop(name, None)

    def clash(self, kind: str, name: str) -> list[Component]:
        """The components that registered ``name`` in ``kind`` when more than one did (else empty)."""
        return list(self.clashes[kind].get(name, []))

    def copy(self) -> Registry:
        """A registry with the same contents, safe to extend."""
        return Registry(
            {kind: dict(table) for kind, table in self.components.items()},
            list(self.plugins),
            list(self.failures),
            list(self.warnings),
            {kind: {n: list(c) for n, c in table.items()} for kind, table in self.clashes.items()},
        )

    def names(self, kind: str) -> list[str]:
        """The usable names of ``kind`` (a clash without a preferred provider is not usable)."""
        return sorted(self.components[kind])

    def get(self, kind: str, name: str, *, key: str | None = None) -> Component:
        table = self.components[kind]
        if name in table:
            return table[name]
        where = f"recipe key '{key}': " if key else ""
        if name in self.clashes[kind]:
            providers = " and ".join(f"{c.plugin} ({c.provider})" for c in self.clashes[kind][name])
            raise DuplicateComponentError(
                f"{where}two {kind}s are named '{name}': from {providers}. A name must mean one thing: "
                "uninstall or rename one, or set SANDBOX_PREFER to the provider to use"
            )
        close = difflib.get_close_matches(str(name), list(table), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        known = ", ".join(self.names(kind)) or "none"
        broken = ""
        if self.failures:
            broken = (
                " Plugins that failed to load: "
                + "; ".join(f"{f.distribution} ({f.reason})" for f in self.failures)
                + "."
            )
        raise RegistryError(f"{where}unknown {kind} '{name}'. Registered {kind}s: {known}.{hint}{broken}")

    def __iter__(self) -> Iterator[Component]:
        for kind in ALL_KINDS:
            yield from (self.components[kind][n] for n in self.names(kind))


def make_register(registry: Registry, kind: str, plugin: PluginInfo) -> Register:
    """The ``register`` callable (:class:`sandbox.protocols.Register`) handed to one plugin's hook for one kind."""

    def register(name: str, build: Build, *, params: Optional[type] = None, description: Optional[str] = None) -> None:
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
                f"plugin '{plugin.name}' registered {kind} '{name}' with params={params!r}: expected a dataclass type"
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


def collect(pm: pluggy.PluginManager, loaded: Optional[Loaded] = None, *, into: Optional[Registry] = None) -> Registry:
    """Call every plugin's hooks, one plugin at a time, so each record names its provider.

    A plugin whose hook raises (an invalid registration or any other error)
    is recorded in ``failures`` and what it registered is dropped; the rest
    keeps working. ``into`` extends an existing registry instead of a new one.
    """
    registry = into if into is not None else Registry()
    loaded = loaded or Loaded()
    registry.plugins.extend(loaded.plugins)
    registry.failures.extend(loaded.failures)
    registry.warnings.extend(loaded.warnings)
    info = {p.name: p for p in registry.plugins}
    for plugin_name, plugin in sorted(pm.list_name_plugin(), key=lambda item: str(item[0])):
        if plugin is None:
            continue
        plugin_info = info.get(plugin_name) or PluginInfo(str(plugin_name), None, None)
        if plugin_name not in info:
            registry.plugins.append(plugin_info)
        others = [p for p in pm.get_plugins() if p is not plugin]
        trial = registry.copy()
        try:
            for kind in ALL_KINDS:
                caller = pm.subset_hook_caller(HOOKS[kind], remove_plugins=others)
                caller(register=make_register(trial, kind, plugin_info))
        except Exception as exc:
            reason = str(exc) if isinstance(exc, RegistryError) else f"{type(exc).__name__}: {exc}"
            registry.failures.append(
                PluginFailure(plugin_info.distribution or plugin_info.name, plugin_info.name, reason)
            )
            continue
        registry.components, registry.clashes = trial.components, trial.clashes  # keep what it registered
    return registry


def load_registry(extra: Mapping[str, object] | None = None, local: Iterable[str] = ()) -> Registry:
    """A new registry: the installed plugins (as ``SANDBOX_PLUGINS`` allows), plugin objects ``extra``
    registered under their given names, and local plugin modules or files ``local``."""
    pm = new_plugin_manager()
    loaded = load_entry_points(pm)
    for name, plugin in (extra or {}).items():
        pm.register(plugin, name=name)
    pm.check_pending()
    registry = collect(pm, loaded)
    return with_local(registry, local) if local else registry


def with_local(base: Registry, specs: Iterable[str]) -> Registry:
    """``base`` plus local plugin modules, each registered as ``local:<spec>``; ``base`` is left unchanged.

    ``specs`` are module names or absolute file paths (see
    :func:`sandbox.plugins.import_local`); a local plugin that fails to
    import or register is in the result's ``failures`` under its plugin name.
    """
    pm = new_plugin_manager()
    return collect(pm, load_local_plugins(pm, specs), into=base.copy())


_INSTALLED: Optional[Registry] = None
_ACTIVE: contextvars.ContextVar[Optional[Registry]] = contextvars.ContextVar("sandbox_registry", default=None)


def get_registry(*, reload: bool = False) -> Registry:
    """The registry in use: the one :func:`use_registry` set, else the installed plugins', built once."""
    global _INSTALLED
    active = _ACTIVE.get()
    if active is not None:
        return active
    if _INSTALLED is None or reload:
        _INSTALLED = load_registry()
    return _INSTALLED


@contextlib.contextmanager
def use_registry(registry: Registry) -> Iterator[Registry]:
    """Make ``registry`` the one :func:`get_registry` returns inside the block."""
    token = _ACTIVE.set(registry)
    try:
        yield registry
    finally:
        _ACTIVE.reset(token)
