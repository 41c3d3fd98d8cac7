"""``sandbox doctor``: every sampler x schedule x target against an exact oracle, or a run's samplers ranked."""

from __future__ import annotations

import argparse

from sandbox.cli.common import count, plugin_option, threads_option, threads_override

NAME = "doctor"
HELP = "check every sampler x schedule x target against the exact oracle denoiser of a Gaussian mixture"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_or_recipe",
        nargs="?",
        metavar="RUN_DIR_OR_RECIPE",
        help="rank every sampler x grid on this run's network (or an analytic recipe) at --nfe instead",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="with RUN_DIR_OR_RECIPE: recipe overrides as for sandbox sample (a run folder: sampler.*, eval.*, "
        "guidance.*, run.device, run.threads, run.seed only)",
    )
    parser.add_argument("--nfe", type=count, default=None, help="with RUN_DIR_OR_RECIPE: the NFE budget (default 10)")
    parser.add_argument(
        "--reference",
        metavar="NAME",
        help="with RUN_DIR_OR_RECIPE: the many-step reference's sampler (default the recipe's)",
    )
    parser.add_argument(
        "--samples", type=count, default=None, metavar="N", help="samples per cell (default 2000; ranking: 256)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results (the matrix, or the ranking) as JSON")
    parser.add_argument(
        "--sampler", action="append", default=None, metavar="NAME", help="check only this sampler (repeatable)"
    )
    for kind in ("schedule", "target"):
        parser.add_argument(
            f"--{kind}",
            action="append",
            default=None,
            metavar="NAME",
            help=f"without a run: check only this {kind} (repeatable; a run's {kind} is the one it was trained on)",
        )
    parser.add_argument(
        "--grid",
        action="append",
        default=None,
        metavar="NAME",
        help="run the samplers on this time grid instead of their own (repeatable; 'all': every grid)",
    )
    threads_option(parser)
    plugin_option(
        parser,
        "also load this local plugin, as a recipe's plugins: list does; with RUN_DIR: trust it, so the run "
        "folder's recipe may load it (repeatable)",
    )


def run(args: argparse.Namespace) -> int:
    from sandbox.tools.doctor import doctor_command  # imports torch

    threads_override(args)  # refuses a negative count, as every command does
    run_or_recipe, overrides = args.run_or_recipe, list(args.overrides)
    if run_or_recipe is not None and "=" in run_or_recipe and not _exists(run_or_recipe):
        run_or_recipe, overrides = None, [run_or_recipe, *overrides]  # `sandbox doctor key=value`: no run given
    return doctor_command(
        run_or_recipe,
        overrides,
        nfe=args.nfe,
        reference=args.reference,
        samples=args.samples,
        json_path=args.json,
        samplers=args.sampler,
        schedules=args.schedule,
        targets=args.target,
        grids=args.grid,
        threads=args.threads,
        plugins=args.plugin,
    )


def _exists(path: str) -> bool:
    from pathlib import Path

    return Path(path).exists()
