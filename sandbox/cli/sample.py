"""``sandbox sample``: draw samples from a run's EMA weights, with its sampler or another."""

from __future__ import annotations

import argparse

from sandbox.cli.common import (
    checkpoint_option,
    checkpoint_path,
    count,
    plugin_option,
    threads_option,
    threads_override,
)

NAME = "sample"
HELP = "draw samples from a run's EMA weights, with its sampler or another"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the folder of a finished or interrupted run")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="sampler.*, guidance.*, eval.*, run.device, run.threads or run.seed, e.g. sampler.name=dpmpp_2m "
        "guidance.name=cfg guidance.scale=2",
    )
    parser.add_argument(
        "--classes",
        metavar="C[,C...]|all",
        help="a conditional run's classes to draw: one, a comma-separated list (indices or names), or all "
        "(the default: a balanced grid, one row per class); sets eval.classes",
    )
    parser.add_argument(
        "--guide",
        metavar="RUN_DIR|CHECKPOINT",
        help="autoguidance's guiding model (a weaker run, or an earlier checkpoint of this one); sets guidance.guide "
        "and guidance.name=autoguidance unless a guidance is named",
    )
    parser.add_argument("--num", type=count, metavar="N", help="samples to draw (default eval.num_samples)")
    checkpoint_option(parser)
    parser.add_argument("--png", action="store_true", help="also write one PNG per sample in png/ (image data)")
    plugin_option(parser)
    threads_option(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sandbox.engine.sample import sample_run  # imports torch

    sample_run(
        Path(args.run_dir),
        [*args.overrides, *option_overrides(args), *threads_override(args)],
        num=args.num,
        png=args.png,
        checkpoint_path=checkpoint_path(args),
        trusted=args.plugin,
    )
    return 0


def option_overrides(args: argparse.Namespace) -> list[str]:
    """``--classes`` and ``--guide`` as the recipe overrides they stand for."""
    import json

    out = []
    if args.classes is not None:
        values = [v.strip() for v in args.classes.split(",") if v.strip()]
        if values == ["all"]:
            out.append("eval.classes=null")
        else:
            out.append(f"eval.classes={json.dumps([int(v) if v.isdigit() else v for v in values])}")
    if args.guide is not None:
        if not any(o.split("=")[0].lstrip("+~") == "guidance.name" for o in args.overrides):
            out.append("guidance.name=autoguidance")
        out.append(f"guidance.guide={json.dumps(args.guide)}")
    return out
