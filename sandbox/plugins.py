"""Plugin discovery: one idempotent loader over the ``sandbox`` entry-point group.

Environment switches (as in llm and datasette):

``SANDBOX_PLUGINS``
    Comma-separated distribution names whose entry points may load. Unset
    loads every installed plugin; the empty string loads none. The
    sandbox's own built-ins always load.
``SANDBOX_TRACE``
    Any non-empty value prints every hook call and its result.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from dataclasses import dataclass

import pluggy

from sandbox import hookspecs

GROUP = "sandbox"
SELF_DISTRIBUTION = "diffusion-sandbox"


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


def new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    if os.environ.get("SANDBOX_TRACE"):
        pm.trace.root.setwriter(lambda message: print(message, end="", file=sys.stderr))
        pm.enable_tracing()
    return pm


def _allowed(distribution: str) -> bool:
    if distribution == SELF_DISTRIBUTION:
        return True
    selection = os.environ.get("SANDBOX_PLUGINS")
    if selection is None:
        return True
    names = {part.strip().lower() for part in selection.split(",") if part.strip()}
    return distribution.lower() in names


def load_entry_points(pm: pluggy.PluginManager) -> tuple[list[PluginInfo], list[PluginFailure]]:
    """Load every allowed ``sandbox`` entry point into ``pm``.

    A plugin that fails to import is recorded, not raised, so the rest of
    the sandbox keeps working.
    """
    loaded: list[PluginInfo] = []
    failures: list[PluginFailure] = []
    seen: set[str] = set()
    for dist in importlib.metadata.distributions():
        dist_name = dist.metadata["Name"] or "?"
        for ep in dist.entry_points:
            if ep.group != GROUP or not _allowed(dist_name):
                continue
            plugin_name = ep.name if dist_name == SELF_DISTRIBUTION else f"{dist_name}:{ep.name}"
            if plugin_name in seen or pm.get_plugin(plugin_name) is not None:
                continue
            seen.add(plugin_name)
            try:
                module = ep.load()
                pm.register(module, name=plugin_name)
                pm.check_pending()  # a misspelled hook implementation fails loudly
            except Exception as exc:  # noqa: BLE001 - any import error is reported
                if pm.get_plugin(plugin_name) is not None:
                    pm.unregister(name=plugin_name)
                failures.append(PluginFailure(dist_name, ep.value, f"{type(exc).__name__}: {exc}"))
                continue
            loaded.append(PluginInfo(plugin_name, dist_name, dist.version))
    return loaded, failures
