"""``sandbox run``: train, evaluate and sample from a recipe, resume a run, start it in N processes, or submit it as
a launcher's job (``--launcher submitit``: one run on SLURM, requeued from its checkpoint)."""

from __future__ import annotations

import argparse

from sandbox.cli.common import count, plugin_option, threads_option, threads_override
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
    parser.add_argument(
        "--launcher",
        metavar="NAME",
        help="submit the run as a one-cell job of a registered launcher, e.g. submitit (a SLURM job, requeued "
        "from its checkpoint near its time limit; sets launcher.name=NAME; resources from the recipe's launcher: "
        "section, e.g. launcher.partition=debug); with --resume, the job resumes the run; local: run here",
    )
    parser.add_argument("--wait", action="store_true", help="with --launcher: wait for the job to end")
    parser.add_argument(
        "--status", metavar="RUN_DIR", help="show a run folder's state: done, queued, running, failed, interrupted"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dot-list overrides, e.g. train.steps=200")
    plugin_option(
        parser,
        "with --resume: trust this local plugin, so the run folder's recipe may load it (repeatable; a run "
        "folder loads no other code than installed plugins)",
    )
    threads_option(parser)


def run(args: argparse.Namespace) -> int:
    from sandbox.recipe import load_recipe

    args.overrides = [*args.overrides, *threads_override(args)]  # --threads N is run.threads=N
    if args.status:
        from sandbox.console import console
        from sandbox.tools.sweep.status import run_status, run_table

        console.print(run_table(args.status, run_status(args.status)))
        return 0
    if args.launcher and args.launcher != "local":
        return _submit(args)
    if args.wait:
        from sandbox.errors import RecipeError

        raise RecipeError("--wait: applies to a run submitted with --launcher NAME")
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


def _submit(args: argparse.Namespace) -> int:
    """``sandbox run --launcher NAME``: the run as a one-cell job (:func:`sandbox.tools.sweep.launch.submit_run`) in
    a new run folder under ``run.output``, or with ``--resume`` in the run's own folder."""
    import contextlib
    from pathlib import Path

    from sandbox.engine.rundir import new_run_dir
    from sandbox.recipe import load_recipe
    from sandbox.tools.sweep.launch import launcher_overrides, resume_task, run_task, submit_run

    if args.nproc and args.nproc > 1:
        from sandbox.errors import RecipeError

        raise RecipeError("--nproc: runs here through torchrun; a launcher's job is one process (leave one out)")
    if args.resume:
        overrides = ([args.recipe] if args.recipe else []) + list(args.overrides)  # `--resume DIR key=value`
        task, section = resume_task(args.resume, overrides, args.plugin, args.launcher)
    elif not args.recipe:
        raise SandboxError("sandbox run needs a recipe file, or --resume RUN_DIR")
    else:
        overrides = launcher_overrides(args.launcher, list(args.overrides))
        recipe = load_recipe(args.recipe, overrides)  # refuse a bad recipe (launcher section included) first
        run_dir = new_run_dir(recipe.run.output, recipe.name).resolve()
        task, section = run_task(args.recipe, overrides, run_dir), recipe.launcher
    try:
        row = submit_run(task, args.launcher, section, wait=args.wait)
    except BaseException:
        if not args.resume:
            with contextlib.suppress(OSError):  # leave no empty run folder behind a refused submission
                Path(task["run_dir"]).rmdir()
        raise
    return 1 if row.state in ("failed", "unknown") or (args.wait and row.state != "done") else 0
