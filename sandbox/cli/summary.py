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
        "--out",
        metavar="DIR",
        help="write summary.csv, .md and .png here (default for one sweep: the sweep's own files, or with "
        "--metric/--baseline SWEEP/summaries/<metrics>[@<baseline>]/, leaving the sweep's own unchanged)",
    )
    summary_options(parser)


def run(args: argparse.Namespace) -> int:
    from sandbox.engine.rundir import SweepDir
    from sandbox.tools.summary import summarize, summarize_runs, summary_folder

    if len(args.paths) == 1 and SweepDir(args.paths[0]).is_sweep():
        out = args.out
        if out is None and (args.metric or args.baseline):  # the sweep's own files are those `sandbox sweep` wrote
            out = summary_folder(args.paths[0], args.metric, args.baseline)
        summarize(args.paths[0], metrics=args.metric, baseline=args.baseline, out=out)
    else:
        summarize_runs(args.paths, metrics=args.metric, baseline=args.baseline, out=args.out)
    return 0
