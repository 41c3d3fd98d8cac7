"""What several commands share: argument types, the summary options, and how plugin problems are reported."""

from __future__ import annotations

import argparse
from typing import Any


def count(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: expected 1 or more")
    return value


def summary_options(parser: argparse.ArgumentParser) -> None:
    """``--metric`` and ``--baseline``, which ``sandbox sweep`` and ``sandbox summary`` pass to the summary."""
    parser.add_argument(
        "--metric",
        action="append",
        default=None,
        metavar="KEY[:min|max]",
        help="summary.json key to report (repeatable; the first ranks)",
    )
    parser.add_argument("--baseline", metavar="KEY=VALUE,...", help="the group to compare with (default: the first)")


def thread_count(text: str) -> int:
    """An argparse type: 0 (automatic) or a positive number of threads."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text}: expected 0 (automatic) or a positive number of threads")
    return value


def threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads N``: torch's CPU threads for every command that computes (``run.threads``; 0: chosen from the
    machine, :func:`sandbox.engine.device.choose_threads`)."""
    parser.add_argument(
        "--threads",
        type=thread_count,
        default=None,
        metavar="N",
        help="CPU threads for torch (sets run.threads; 0, the default: all idle cores, one on a busy machine)",
    )


def threads_override(args: argparse.Namespace) -> list[str]:
    """``--threads N`` as the override ``run.threads=N`` (nothing when not given)."""
    threads = getattr(args, "threads", None)
    return [f"run.threads={threads}"] if threads is not None else []


def checkpoint_option(parser: argparse.ArgumentParser, help: str = "") -> None:
    """``--checkpoint PATH``: the weights a command reads from a run folder instead of its own choice."""
    parser.add_argument(
        "--checkpoint",
        metavar="PATH",
        help=help or "checkpoint to load (default checkpoints/final.pt, else the newest step checkpoint)",
    )


def checkpoint_path(args: argparse.Namespace) -> Any:
    """``--checkpoint`` as a ``Path``, or None."""
    from pathlib import Path

    return Path(args.checkpoint) if args.checkpoint else None


def plugin_option(parser: argparse.ArgumentParser, help: str = "") -> None:
    """``--plugin MODULE_OR_FILE``: what a run folder's recipe may load besides installed plugins (the one way a
    command that reads a run folder is told to trust its local code)."""
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help=help
        or "trust this local plugin: the run folder's recipe may load it (repeatable; a run folder loads no "
        "other code than installed plugins)",
    )


def report_problems(registry: Any) -> None:
    """Plugins that failed to load, loader warnings and name clashes, on stderr."""
    from rich.markup import escape

    from sandbox.console import error_console

    for failure in registry.failures:
        error_console.print(
            f"[yellow]plugin from {escape(failure.distribution)} ({escape(failure.entry_point)}) "
            f"failed to load:[/] {escape(failure.reason)}",
            soft_wrap=True,
        )
    for warning in registry.warnings:
        error_console.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
    for kind, clashes in registry.clashes.items():
        for name, comps in clashes.items():
            chosen = registry.components[kind].get(name)
            providers = " and ".join(f"{c.plugin} ({c.provider})" for c in comps)
            outcome = f"using {chosen.provider} (SANDBOX_PREFER)" if chosen else "the name is disabled"
            error_console.print(
                f"[yellow]warning:[/] {kind} '{name}' is registered by {escape(providers)}; {escape(outcome)}",
                soft_wrap=True,
            )
