"""``sandbox sweep``: run the cartesian product of a recipe's matrix axes (resumable), here or through a launcher."""

from __future__ import annotations

import argparse

from sandbox.cli.common import count, summary_options, threads_option

NAME = "sweep"
HELP = "run the cartesian product of a recipe's matrix axes (resumable)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "recipe",
        nargs="?",
        help="path of a YAML recipe, usually with a top-level matrix: mapping (omit with --status)",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dot-list overrides applied to every cell")
    parser.add_argument(
        "--axis",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="an axis (replaces the recipe's on the same key); repeatable",
    )
    parser.add_argument("--seeds", type=count, default=1, help="seeds per cell: run.seed + 0..N-1 (default 1)")
    parser.add_argument("--jobs", type=count, default=1, help="cells run at once, each in its own process")
    threads_option(parser)
    parser.add_argument("--dry-run", action="store_true", help="print the plan and run nothing")
    parser.add_argument("--out", help="sweep folder (default <run.output>/sweeps/<recipe stem>)")
    parser.add_argument(
        "--launcher",
        default="local",
        metavar="NAME",
        help="local (default: processes on this machine, waited for) or a registered launcher, e.g. submitit "
        "(a SLURM job array; sets launcher.name=NAME; resources from the recipe's launcher: section, e.g. "
        "launcher.partition=debug; --dry-run shows them and the jobs)",
    )
    parser.add_argument("--wait", action="store_true", help="with a launcher: wait for its jobs, then summarize")
    parser.add_argument(
        "--status", metavar="SWEEP_DIR", help="show the done, running, queued and failed cells of a sweep folder"
    )
    summary_options(parser)


def run(args: argparse.Namespace) -> int:
    from sandbox.console import console
    from sandbox.tools.sweep import failed, parse_axis, plan_sweep, plan_table

    if args.status:
        from pathlib import Path

        from sandbox.tools.sweep import status_table, sweep_status

        console.print(status_table(Path(args.status), sweep_status(args.status)))
        return 0
    from sandbox.errors import RecipeError

    if args.recipe is None:
        raise RecipeError("sandbox sweep: expected a recipe, or --status SWEEP_DIR")
    if args.launcher != "local" and args.jobs != 1:
        raise RecipeError(f"--jobs {args.jobs}: applies to --launcher local; the launcher's jobs run at once")
    from sandbox.tools.sweep.launch import launch_tables, launcher_overrides

    overrides = launcher_overrides(args.launcher, list(args.overrides))  # --launcher NAME: launcher.name=NAME
    plan = plan_sweep(args.recipe, overrides, axes=[parse_axis(a) for a in args.axis], seeds=args.seeds, out=args.out)
    if args.dry_run:
        console.print(plan_table(plan))
        if args.launcher != "local" and any(cell.recipe is not None for cell in plan.cells):
            for table in launch_tables(plan, args.launcher):
                console.print(table)
        return 2 if any(cell.status == "invalid" for cell in plan.cells) else 0
    from sandbox.tools.summary import summarize

    if args.launcher != "local":
        from sandbox.tools.sweep import launch_sweep

        rows = launch_sweep(plan, args.launcher, wait=args.wait)
        if args.wait:
            summarize(plan.sweep_dir, metrics=args.metric, baseline=args.baseline)
        return 1 if any(row.state in ("failed", "invalid") for row in rows) else 0
    from sandbox.tools.sweep import run_sweep  # imports torch

    # holds the sweep folder's lock; stops on SIGINT / SIGTERM
    run_sweep(plan, jobs=args.jobs, threads=args.threads or 0)
    if plan.interrupted is not None:
        import shlex

        from sandbox.console import error_console

        again = ["sandbox", "sweep", args.recipe, *args.overrides, *(f"--axis={a}" for a in args.axis)]
        again += [f"--seeds={args.seeds}", f"--jobs={args.jobs}", *([f"--out={args.out}"] if args.out else [])]
        again += [f"--threads={args.threads}"] if args.threads is not None else []
        message = f"sweep interrupted; resume it with the same command: {shlex.join(again)}"
        error_console.print(message, markup=False, soft_wrap=True)
        return 128 + plan.interrupted
    summarize(plan.sweep_dir, metrics=args.metric, baseline=args.baseline)
    return 1 if failed(plan) else 0
