"""``sandbox tune-steps``: tune a sampler's time grid at a given NFE to a run's network (or an analytic recipe)."""

from __future__ import annotations

import argparse

from sandbox.cli.common import count, plugin_option, threads_option, threads_override

NAME = "tune-steps"
HELP = "tune a sampler's time grid at a given NFE to a run's network (or an analytic recipe)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target", metavar="RUN_DIR_OR_RECIPE", help="a run folder, or a recipe with an analytic denoiser"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="sampler.*, eval.*, run.* overrides")
    parser.add_argument("--nfe", type=count, required=True, help="network evaluations per sample of the grid")
    parser.add_argument("--sampler", metavar="NAME", help="the sampler to tune for (default the recipe's)")
    parser.add_argument("--name", metavar="NAME", help="the grid's name (default <sampler>-nfe<NFE>)")
    parser.add_argument("--reference", metavar="NAME", help="the many-step reference's sampler (default --sampler)")
    parser.add_argument("--batch", type=count, default=256, help="starting noise draws tuned on (default 256)")
    parser.add_argument(
        "--heldout", type=count, help="held-out starting noise draws the grid is chosen on (default 4 x --batch)"
    )
    parser.add_argument(
        "--confirm",
        type=int,
        metavar="N",
        help="new draws a grid must also beat the own grid on before it replaces it (default 128 x --batch; 0: none)",
    )
    parser.add_argument(
        "--iterations", type=count, default=200, help="objective evaluations on the tuning batch (default 200)"
    )
    parser.add_argument("--reference-steps", type=count, default=500, help="steps of the reference (default 500)")
    parser.add_argument(
        "--search",
        choices=("gauss-newton", "nelder-mead"),
        default="gauss-newton",
        help="the search: Levenberg-Marquardt on the residuals (default), or Nelder-Mead",
    )
    plugin_option(parser)
    threads_option(parser)


def run(args: argparse.Namespace) -> int:
    from sandbox.tools.tune import tune_command  # imports torch

    tune_command(
        args.target,
        [*args.overrides, *threads_override(args)],
        nfe=args.nfe,
        sampler=args.sampler,
        name=args.name,
        reference_sampler=args.reference,
        batch=args.batch,
        heldout=args.heldout,
        confirm_draws=args.confirm,
        iterations=args.iterations,
        reference_steps=args.reference_steps,
        search=args.search,
        trusted=tuple(args.plugin),
    )
    return 0
