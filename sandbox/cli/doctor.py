"""``sandbox doctor``: every sampler x schedule x target against an exact oracle, or a run's samplers ranked."""

from __future__ import annotations

import argparse

from sandbox.cli.common import count, plugin_option

NAME = "doctor"
HELP = "check every sampler x schedule x target against the exact oracle denoiser of a Gaussian mixture"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_or_recipe",
        nargs="?",
        metavar="RUN_DIR_OR_RECIPE",
        help="rank every sampler x grid on this run's network (or an analytic recipe) at --nfe instead",
    )
    parser.add_argument("--nfe", type=count, default=10, help="with RUN_DIR_OR_RECIPE: the NFE budget (default 10)")
    parser.add_argument(
        "--reference",
        metavar="NAME",
        help="with RUN_DIR_OR_RECIPE: the many-step reference's sampler (default the recipe's)",
    )
    parser.add_argument(
        "--samples", type=int, default=None, metavar="N", help="samples per cell (default 2000; ranking: 256)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    for kind in ("sampler", "schedule", "target"):
        parser.add_argument(
            f"--{kind}", action="append", default=None, metavar="NAME", help=f"check only this {kind} (repeatable)"
        )
    parser.add_argument(
        "--grid",
        action="append",
        default=None,
        metavar="NAME",
        help="run the samplers on this time grid instead of their own (repeatable; 'all': every grid)",
    )
    plugin_option(
        parser,
        "also load this local plugin, as a recipe's plugins: list does; with RUN_DIR: trust it, so the run "
        "folder's recipe may load it (repeatable)",
    )


def run(args: argparse.Namespace) -> int:
    from sandbox.tools.doctor import doctor_command  # imports torch

    return doctor_command(
        args.run_or_recipe,
        nfe=args.nfe,
        reference=args.reference,
        samples=args.samples,
        json_path=args.json,
        samplers=args.sampler,
        schedules=args.schedule,
        targets=args.target,
        grids=args.grid,
        plugins=args.plugin,
    )
