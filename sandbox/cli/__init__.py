"""The ``sandbox`` command line: this module only registers the commands and reports their errors.

Each command is one module of this package holding its options and its
handler: ``NAME`` (the word typed), ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``. Adding a command is one new file and one entry in
:data:`COMMANDS`. Commands stay thin: the work is in the tools and the
engine. ``--help``, ``list``, ``plugins`` and ``show`` never import torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from sandbox import __version__
from sandbox.errors import SandboxError

#: the command modules, in the order ``sandbox --help`` lists them
COMMANDS = (
    "run",
    "sample",
    "likelihood",
    "export",
    "show",
    "list",
    "plugins",
    "doctor",
    "tune_steps",
    "sweep",
    "summary",
    "completion",
)


def commands() -> dict[str, ModuleType]:
    """The command word of each command module, and the module."""
    modules = [importlib.import_module(f"sandbox.cli.{name}") for name in COMMANDS]
    return {module.NAME: module for module in modules}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sandbox", description="A plugin-based research sandbox for diffusion models."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in commands().items():
        module.add_arguments(sub.add_parser(name, help=module.HELP))
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (an unreadable checkpoint skipped, a cache rebuilt) as one line on stderr, not a code listing;
    under torchrun, rank 0's only (every process meets the same ones)."""
    import os

    from rich.markup import escape

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and os.environ.get("RANK", "0") != "0":
        return

    from sandbox.console import error_console

    error_console.print(f"[yellow]warning:[/] {escape(str(message))}", soft_wrap=True)


def _rank_prefix(exc: SandboxError) -> str | None:
    """How a process names itself in an error: '' in a single process and on rank 0; under torchrun the
    other ranks say ``rank N:``, or stay silent for an error every process meets alike (rank 0 reports it)."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return ""
    from sandbox.engine import distributed  # imports torch, only under torchrun

    if distributed.is_main():
        return ""
    return None if distributed.every_rank(exc) else f"rank {distributed.rank()}: "


def main(argv: list[str] | None = None) -> int:
    import warnings

    warnings.showwarning = _show_warning
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    stray = [item for item in extra if (item.startswith("-") or "=" not in item) and not item.startswith("~")]
    if extra and (stray or not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]  # key=value overrides may also follow the options
    if args.command is None:
        parser.print_help()
        return 0
    args.parser = parser  # the whole command line, which `sandbox completion` writes its script from
    try:
        return int(commands()[args.command].run(args))
    except SandboxError as exc:
        from rich.markup import escape

        from sandbox.console import error_console

        prefix = _rank_prefix(exc)
        if prefix is not None:  # escaped: a message may hold brackets, e.g. pip install 'package[extra]'
            error_console.print(f"[bold red]{prefix}error:[/] {escape(str(exc))}", soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
