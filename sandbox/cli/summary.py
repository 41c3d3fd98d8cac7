"""``sandbox summary``: aggregate a sweep, or any set of run folders and sweeps: table, CSV, Markdown and plot."""

from __future__ import annotations

import argparse

from sandbox.cli.common import summary_options

NAME = "summary"
HELP = "aggregate a sweep, or any set of run folders and sweeps: table, CSV, Markdown and plot"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="RUN_OR_SWEEP",
        help="sweep folders (sweep.json), run folders (recipe.yaml), or folders of runs such as runs/",
    )
    parser.add_argument(
        "--out", metavar="DIR", help="write summary.csv, .md and .png here (one sweep alone: into the sweep)"
    )
    summary_options(parser)


def run(args: argparse.Namespace) -> int:
    from sandbox.engine.rundir import SweepDir
    from sandbox.tools.summary import summarize, summarize_runs

    if len(args.paths) == 1 and args.out is None and SweepDir(args.paths[0]).is_sweep():
        summarize(args.paths[0], metrics=args.metric, baseline=args.baseline)
    else:
        summarize_runs(args.paths, metrics=args.metric, baseline=args.baseline, out=args.out)
    return 0
