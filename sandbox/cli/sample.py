"""``sandbox sample``: draw samples from a run's EMA weights, with its sampler or another."""

from __future__ import annotations

import argparse

from sandbox.cli.common import count, plugin_option

NAME = "sample"
HELP = "draw samples from a run's EMA weights, with its sampler or another"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the folder of a finished or interrupted run")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="sampler.*, eval.*, run.device, run.threads or run.seed, e.g. sampler.name=dpmpp_2m",
    )
    parser.add_argument("--num", type=count, metavar="N", help="samples to draw (default eval.num_samples)")
    parser.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="checkpoint to load (default checkpoints/final.pt, else the newest step checkpoint)",
    )
    parser.add_argument("--png", action="store_true", help="also write one PNG per sample in png/ (image data)")
    plugin_option(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sandbox.engine.sample import sample_run  # imports torch

    sample_run(
        Path(args.run_dir),
        list(args.overrides),
        num=args.num,
        png=args.png,
        checkpoint_path=Path(args.checkpoint) if args.checkpoint else None,
        trusted=args.plugin,
    )
    return 0
