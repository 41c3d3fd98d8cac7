"""Plugin discovery: one idempotent loader over the ``sandbox`` entry-point group.

Environment switches (as in llm and datasette):

``SANDBOX_PLUGINS``
    Comma-separated distribution names whose entry points may load. Unset
    loads every installed plugin; the empty string loads none. The
    sandbox's own built-ins always load.
``SANDBOX_TRACE``
    Any non-empty value prints every hook call and its result, and each
    loader warning as it happens.
``SANDBOX_PREFER``
    Comma-separated distribution or plugin names whose components win a
    name clash (to override a built-in on purpose); see :mod:`sandbox.registry`.

Loading records, and never raises, a plugin that fails to import (any
exception, ``sys.exit`` included) and warns about a plugin module with no
hook implementation (a forgotten ``@hookimpl``) and a ``SANDBOX_PLUGINS``
name that matches no installed distribution.

A recipe may also name *local* plugins (``plugins: [my_module, ./my_plugin.py]``):
modules imported by name or from a file path, registered under the plugin
name ``local:<module or path>`` with no distribution. ``SANDBOX_PLUGINS``
does not filter them: the recipe asked for them by name. A run folder's recipe
is data, not code: :func:`sandbox.recipe.load_recipe` loads its local plugins
only when :func:`is_installed`, :func:`already_loaded` or named by the user
(``--plugin``), and checks that before anything is imported.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import re
import site
import sys
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from sandbox import hookspecs
from sandbox.errors import RecipeError

GROUP = "sandbox"
SELF_DISTRIBUTION = "diffusion-sandbox"
LOCAL_PREFIX = "local:"  # plugin name prefix of a recipe's local plugins


@dataclass(frozen=True)
class PluginFailure:
    """An entry point that could not be loaded, and why."""

    distribution: str
    entry_point: str
    reason: str


@dataclass(frozen=True)
class PluginInfo:
    """A loaded plugin and the distribution that provides it."""

    name: str
    distribution: str | None
    version: str | None


@dataclass
class Loaded:
    """What a loader did: the plugins it registered, those that failed, and warnings."""

    plugins: list[PluginInfo] = field(default_factory=list)
    failures: list[PluginFailure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        if os.environ.get("SANDBOX_TRACE"):
            print(f"sandbox: warning: {message}", file=sys.stderr)

    def register(self, pm: pluggy.PluginManager, module: object, info: PluginInfo, source: str, what: str) -> None:
        """Register ``module`` as ``info.name``; a failure is recorded under ``source`` (a distribution or path)."""
        try:
            pm.register(module, name=info.name)
            pm.check_pending()  # a misspelled hook implementation fails loudly
        except Exception as exc:
            if pm.get_plugin(info.name) is not None:
                pm.unregister(name=info.name)
            self.failures.append(PluginFailure(source, what, f"{type(exc).__name__}: {exc}"))
            return
        if not pm.get_hookcallers(module):
            self.warn(
                f"plugin '{info.name}' ({what}) implements no hook: mark its register_* functions with "
                "@sandbox.hookimpl"
            )
        self.plugins.append(info)


def _import_failure(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r}) while loading"
    return f"{type(exc).__name__}: {exc}"


def new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    if os.environ.get("SANDBOX_TRACE"):
        pm.trace.root.setwriter(lambda message: print(message, end="", file=sys.stderr))
        pm.enable_tracing()
    return pm


def _selection() -> set[str] | None:
    """``SANDBOX_PLUGINS`` as lower-case distribution names; None when unset (load everything)."""
    selection = os.environ.get("SANDBOX_PLUGINS")
    if selection is None:
        return None
    return {part.strip().lower() for part in selection.split(",") if part.strip()}


def load_entry_points(pm: pluggy.PluginManager) -> Loaded:
    """Load every allowed ``sandbox`` entry point into ``pm``; failures are recorded, not raised."""
    loaded = Loaded()
    selection = _selection()
    seen: set[str] = set()
    installed: set[str] = set()
    for dist in importlib.metadata.distributions():
        dist_name = dist.metadata["Name"] or "?"
        for ep in dist.entry_points:
            if ep.group != GROUP:
                continue
            installed.add(dist_name.lower())
            if dist_name != SELF_DISTRIBUTION and selection is not None and dist_name.lower() not in selection:
                continue
            plugin_name = ep.name if dist_name == SELF_DISTRIBUTION else f"{dist_name}:{ep.name}"
            if plugin_name in seen or pm.get_plugin(plugin_name) is not None:
                continue
            seen.add(plugin_name)
            try:
                module = ep.load()
            except (Exception, SystemExit) as exc:
                loaded.failures.append(PluginFailure(dist_name, ep.value, _import_failure(exc)))
                continue
            loaded.register(pm, module, PluginInfo(plugin_name, dist_name, dist.version), dist_name, ep.value)
    for name in sorted((selection or set()) - installed):
        loaded.warn(
            f"SANDBOX_PLUGINS names '{name}', but no installed distribution has sandbox entry points "
            f"(installed: {', '.join(sorted(installed)) or 'none'})"
        )
    return loaded


def is_path(spec: str) -> bool:
    """Whether a local plugin ``spec`` is a file or folder path rather than a module name."""
    return spec.endswith(".py") or "/" in spec or "\\" in spec or spec.startswith(("~", "."))


_LOCAL_MODULES: dict[str, ModuleType] = {}  # local plugin files imported by this process, by absolute path
_LOCAL_NAMES: set[str] = set()  # local plugin modules imported by name by this process


def already_loaded(spec: str) -> bool:
    """Whether this process already imported the local plugin ``spec`` (a module name or an absolute path)."""
    return spec in _LOCAL_MODULES if is_path(spec) else spec in _LOCAL_NAMES


def _install_roots() -> list[Path]:
    """The folders installed code lives in: the standard library and the site-packages folders."""
    paths = sysconfig.get_paths()
    roots = [paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths]
    roots += [*site.getsitepackages(), site.getusersitepackages()]
    return [Path(root).resolve() for root in roots]


def is_installed(name: str) -> bool:
    """Whether the module ``name`` is installed: its top-level package is in the standard library, is provided
    by an installed distribution, or lies in a site-packages folder. Nothing is imported to tell."""
    top = name.partition(".")[0]
    if not top.isidentifier():
        return False
    if top in sys.stdlib_module_names:
        return True
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    if found is None:
        return False
    where = [found.origin] if found.has_location and found.origin else list(found.submodule_search_locations or [])
    roots = _install_roots()
    if where and all(any(Path(w).resolve().is_relative_to(root) for root in roots) for w in where):
        return True
    return top in importlib.metadata.packages_distributions()  # an editable install: its source folder


def import_local(spec: str) -> ModuleType:
    """Import a local plugin: a module name, or the path of a ``.py`` file or a package folder.

    A file is imported once per process, as a module named after its stem and
    a hash of its absolute path, so two files with the same name do not clash.
    """
    if not is_path(spec):
        module = importlib.import_module(spec)
        _LOCAL_NAMES.add(spec)
        return module
    path = Path(spec).expanduser().resolve()
    if str(path) in _LOCAL_MODULES:
        return _LOCAL_MODULES[str(path)]
    init, locations = (path / "__init__.py", [str(path)]) if path.is_dir() else (path, None)
    if not init.is_file():
        raise FileNotFoundError(f"no such file: {init}")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    name = f"sandbox_local_{re.sub(r'[^0-9a-zA-Z_]', '_', path.stem)}_{digest}"
    module_spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=locations)
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"{init} is not a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    _LOCAL_MODULES[str(path)] = module
    return module


def load_local_plugins(pm: pluggy.PluginManager, specs: Iterable[str]) -> Loaded:
    """Import and register local plugin modules into ``pm`` as ``local:<spec>``.

    As with entry points, a plugin that fails is recorded with its reason,
    not raised; :func:`sandbox.recipe.load_recipe` turns that into an error
    naming the recipe key.
    """
    loaded = Loaded()
    for spec in specs:
        plugin_name = LOCAL_PREFIX + spec
        if pm.get_plugin(plugin_name) is not None:
            continue
        try:
            module = import_local(spec)
        except (Exception, SystemExit) as exc:
            loaded.failures.append(PluginFailure(plugin_name, spec, _import_failure(exc)))
            continue
        loaded.register(pm, module, PluginInfo(plugin_name, None, None), plugin_name, spec)
    return loaded


# --- the plugins a recipe names --------------------------------------------------------------------------------


def plugin_specs(value: Any, folder: Path, where: str = "") -> list[str]:
    """A ``plugins:`` list with its file paths made absolute against ``folder``."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise RecipeError(
            f"recipe key 'plugins'{where}: {value!r}; expected a list of module names or paths of Python files"
        )
    return [str((folder / Path(v).expanduser()).resolve()) if is_path(v) else v for v in value]


def refuse_untrusted(specs: list[str], trusted: Iterable[str], source: str) -> None:
    """Stop at the first local plugin of a run folder's recipe that is neither installed, already loaded by this
    process (from a recipe the user named), nor ``trusted``, before any of them is imported."""
    named = {str(Path(t).expanduser().resolve()) if is_path(t) else t for t in trusted}
    for i, spec in enumerate(specs):
        if spec in named or already_loaded(spec) or (not is_path(spec) and is_installed(spec)):
            continue
        what = "a local plugin file" if is_path(spec) else "not an installed module"
        raise RecipeError(
            f"recipe key 'plugins[{i}]' in {source}: {spec!r} is {what}, and a run folder's recipe runs no code "
            f"you have not named; if you trust it, add --plugin {spec}"
        )
