"""The ``sandbox`` command line. Commands stay thin; the work is in the engine.

``--help``, ``list``, ``plugins`` and ``show`` never import torch.
"""

from __future__ import annotations

import argparse
import sys

from sandbox import __version__
from sandbox.errors import SandboxError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sandbox", description="A plugin-based research sandbox for diffusion models.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="train, evaluate and sample from a recipe")
    run.add_argument("recipe", help="path of a YAML recipe")
    run.add_argument("overrides", nargs="*", metavar="key=value", help="dot-list overrides, e.g. train.steps=200")
    show = sub.add_parser("show", help="print the fully resolved recipe without running it")
    show.add_argument("recipe", help="path of a YAML recipe")
    show.add_argument("overrides", nargs="*", metavar="key=value")
    sub.add_parser("list", help="every registered component by kind, with its provider")
    sub.add_parser("plugins", help="the loaded plugins with their distributions and versions")
    return parser


def cmd_run(args) -> int:
    from sandbox.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    from sandbox.run import run_recipe  # imports torch

    run_recipe(recipe)
    return 0


def cmd_show(args) -> int:
    from rich.syntax import Syntax

    from sandbox.console import console
    from sandbox.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    console.print(Syntax(recipe.to_yaml(), "yaml", background_color="default"))
    return 0


def cmd_list(args) -> int:
    from sandbox.console import console, table
    from sandbox.registry import KINDS, get_registry

    registry = get_registry()
    for kind in KINDS:
        rows = [[c.name, c.provider, c.description] for c in (registry.components[kind][n] for n in registry.names(kind))]
        console.print(table(f"{kind}s", ["name", "provider", "description"], rows))
    _report_failures(registry)
    return 0


def cmd_plugins(args) -> int:
    from sandbox.console import console, table
    from sandbox.registry import get_registry

    registry = get_registry()
    rows = []
    for plugin in registry.plugins:
        provided = [f"{c.kind} {c.name}" for c in registry if c.plugin == plugin.name]
        rows.append([plugin.name, plugin.distribution or "-", plugin.version or "-", ", ".join(provided)])
    console.print(table("plugins", ["plugin", "distribution", "version", "provides"], rows))
    _report_failures(registry)
    return 0


def _report_failures(registry) -> None:
    from sandbox.console import error_console

    for failure in registry.failures:
        error_console.print(f"[yellow]plugin from {failure.distribution} ({failure.entry_point}) failed to load:[/] "
                            f"{failure.reason}")


COMMANDS = {"run": cmd_run, "show": cmd_show, "list": cmd_list, "plugins": cmd_plugins}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args)
    except SandboxError as exc:
        from sandbox.console import error_console

        error_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
