"""``sandbox list``: every registered component by kind, with its provider (never imports torch)."""

from __future__ import annotations

import argparse

from sandbox.cli.common import report_problems
from sandbox.errors import SandboxError

NAME = "list"
HELP = "every registered component by kind, with its provider"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--names", metavar="KIND", help="print only the usable names of KIND (sampler, schedule, ...), one a line"
    )


def run(args: argparse.Namespace) -> int:
    from sandbox.console import console, table
    from sandbox.registry import ALL_KINDS, get_registry

    registry = get_registry()
    if args.names is not None:  # what shell completion asks for at TAB time: plain lines, no table
        if args.names not in ALL_KINDS:
            raise SandboxError(f"--names {args.names}: unknown kind; expected one of {', '.join(ALL_KINDS)}")
        print("\n".join(registry.names(args.names)))
        return 0
    for kind in ALL_KINDS:
        rows = []
        for name in sorted(set(registry.components[kind]) | set(registry.clashes[kind])):
            component = registry.components[kind].get(name)
            clash = registry.clash(kind, name)
            if component is None:
                rows.append(
                    [
                        name,
                        " + ".join(c.provider for c in clash),
                        f"[red]disabled: registered by {len(clash)} plugins (set SANDBOX_PREFER to choose one)[/]",
                    ]
                )
                continue
            others = [c.provider for c in clash if c is not component]
            note = f" [yellow](preferred over {', '.join(others)})[/]" if others else ""
            rows.append([name, component.provider, component.description + note])
        console.print(table(kind if kind.endswith("ance") else f"{kind}s", ["name", "provider", "description"], rows))
    report_problems(registry)
    return 0
