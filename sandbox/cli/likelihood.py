"""``sandbox likelihood``: the likelihood of a run's validation split, in bits/dim (or nats/dim)."""

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
from sandbox.sections import NLL_ESTIMATORS

NAME = "likelihood"
HELP = "the likelihood of a run's validation split: the variational bound, the ELBO or the exact ODE likelihood"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the folder of a finished or interrupted run")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="eval.nll.* (every setting: docs/likelihood.md), run.device or run.threads, e.g. eval.nll.draws=64",
    )
    parser.add_argument(
        "--estimator",
        metavar="NAME[,NAME...]",
        help=f"one or more of {', '.join(NLL_ESTIMATORS)} (default: eval.nll.estimators, ode)",
    )
    parser.add_argument(
        "--items", type=count, metavar="N", help="validation items to score (default eval.nll.items, 1000)"
    )
    parser.add_argument("--rtol", metavar="R", help="ode: the solver's relative tolerance (eval.nll.rtol)")
    parser.add_argument("--atol", metavar="A", help="ode: the solver's absolute tolerance (eval.nll.atol)")
    checkpoint_option(parser)
    plugin_option(parser)
    threads_option(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sandbox.engine.likelihood.command import likelihood_run  # imports torch

    likelihood_run(
        Path(args.run_dir),
        [*args.overrides, *option_overrides(args), *threads_override(args)],
        checkpoint_path=checkpoint_path(args),
        trusted=args.plugin,
    )
    return 0


def option_overrides(args: argparse.Namespace) -> list[str]:
    """The options as the ``eval.nll`` overrides they stand for; the recipe checks their values."""
    out = []
    if args.estimator is not None:
        names = [name.strip() for name in args.estimator.split(",") if name.strip()]
        out.append(f"eval.nll.estimators=[{','.join(names)}]")
    if args.items is not None:
        out.append(f"eval.nll.items={args.items}")
    for key in ("rtol", "atol"):
        if getattr(args, key) is not None:
            out.append(f"eval.nll.{key}={getattr(args, key)}")
    return out
