"""``sandbox plugins``: the loaded plugins with their distributions and versions (never imports torch)."""

from __future__ import annotations

import argparse

from sandbox.cli.common import report_problems

NAME = "plugins"
HELP = "the loaded plugins with their distributions and versions"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from sandbox.console import console, table
    from sandbox.registry import ALL_KINDS, get_registry

    registry = get_registry()
    rows = []
    for plugin in registry.plugins:
        provided = [f"{c.kind} {c.name}" for c in registry if c.plugin == plugin.name]
        provided += [
            f"{kind} {name} (clash)"
            for kind in ALL_KINDS
            for name, comps in registry.clashes[kind].items()
            if registry.components[kind].get(name) not in comps and any(c.plugin == plugin.name for c in comps)
        ]
        rows.append([plugin.name, plugin.distribution or "-", plugin.version or "-", ", ".join(provided)])
    console.print(table("plugins", ["plugin", "distribution", "version", "provides"], rows))
    report_problems(registry)
    return 0
