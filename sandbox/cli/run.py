"""``sandbox run``: train, evaluate and sample from a recipe, resume a run, or start it in N processes."""

from __future__ import annotations

import argparse

from sandbox.cli.common import count, plugin_option
from sandbox.errors import SandboxError

NAME = "run"
HELP = "train, evaluate and sample from a recipe"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", nargs="?", help="path of a YAML recipe (omit with --resume)")
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted run in its folder from its latest "
        "good checkpoint (overrides: train.steps, run.device, ...)",
    )
    parser.add_argument(
        "--nproc",
        type=count,
        metavar="N",
        help="train in N processes on this machine (one per GPU), started through torchrun; "
        "train.batch_size stays the global batch",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dot-list overrides, e.g. train.steps=200")
    plugin_option(
        parser,
        "with --resume: trust this local plugin, so the run folder's recipe may load it (repeatable; a run "
        "folder loads no other code than installed plugins)",
    )


def run(args: argparse.Namespace) -> int:
    from sandbox.recipe import load_recipe

    if args.nproc and args.nproc > 1:
        return _launch(args)
    if args.resume:
        overrides = ([args.recipe] if args.recipe else []) + list(args.overrides)  # `--resume DIR key=value`
        from sandbox.engine.resume import resume_recipe  # imports torch

        recipe, state = resume_recipe(args.resume, overrides, args.plugin)
    elif not args.recipe:
        raise SandboxError("sandbox run needs a recipe file, or --resume RUN_DIR")
    else:
        recipe, state = load_recipe(args.recipe, args.overrides), None
    from sandbox.engine import distributed  # imports torch
    from sandbox.engine.run import run_recipe

    try:
        run_recipe(recipe, run_dir=args.resume, resume=bool(args.resume), state=state)
    finally:
        distributed.shutdown()  # under torchrun: leave the process group
    return 0


def _launch(args: argparse.Namespace) -> int:
    """``sandbox run --nproc N``: the same command in N processes through torchrun (``sandbox.engine.distributed``)."""
    import os

    from sandbox.recipe import load_recipe

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SandboxError("--nproc starts torchrun itself: leave it out of a command that torchrun starts")
    if not args.resume:
        if not args.recipe:
            raise SandboxError("sandbox run needs a recipe file, or --resume RUN_DIR")
        recipe = load_recipe(args.recipe, args.overrides)  # refuse a bad recipe before starting any process
    from sandbox.engine import distributed  # imports torch

    if not args.resume:
        distributed.check_batch(recipe.train.batch_size, args.nproc)
    again = [*([args.recipe] if args.recipe else []), *(["--resume", args.resume] if args.resume else [])]
    again += [f"--plugin={plugin}" for plugin in args.plugin]
    return distributed.launch(args.nproc, ["run", *again, *args.overrides])
