"""``sandbox export``: write a run's EMA network and schedule for another library (diffusers)."""

from __future__ import annotations

import argparse

from sandbox.cli.common import checkpoint_option, checkpoint_path, plugin_option, threads_option

NAME = "export"
HELP = "write a run's EMA network and schedule for another library (diffusers)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the folder of a finished or interrupted run")
    parser.add_argument(
        "out", metavar="OUT", help="a new folder; diffusers' DDPMPipeline.from_pretrained(OUT) loads it"
    )
    parser.add_argument("--format", default="diffusers", choices=("diffusers",), help="the layout (default diffusers)")
    checkpoint_option(parser, "checkpoint to export (default ema.safetensors, else as sandbox sample picks)")
    plugin_option(parser)
    threads_option(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sandbox.tools.export import export_run  # imports torch

    checkpoint = checkpoint_path(args)
    export_run(
        Path(args.run_dir),
        Path(args.out),
        fmt=args.format,
        checkpoint_path=checkpoint,
        trusted=args.plugin,
        threads=args.threads,
    )
    return 0
