"""The ``sandbox`` command line. Commands stay thin; the work is in the engine.

``--help``, ``list``, ``plugins`` and ``show`` never import torch.
"""

from __future__ import annotations

import argparse
import sys

from sandbox import __version__
from sandbox.errors import SandboxError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sandbox", description="A plugin-based research sandbox for diffusion models."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="train, evaluate and sample from a recipe")
    run.add_argument("recipe", nargs="?", help="path of a YAML recipe (omit with --resume)")
    run.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted run in its folder from its latest "
        "good checkpoint (overrides: train.steps, run.device, ...)",
    )
    run.add_argument(
        "--nproc",
        type=_count,
        metavar="N",
        help="train in N processes on this machine (one per GPU), started through torchrun; "
        "train.batch_size stays the global batch",
    )
    run.add_argument("overrides", nargs="*", metavar="key=value", help="dot-list overrides, e.g. train.steps=200")
    sample = sub.add_parser("sample", help="draw samples from a run's EMA weights, with its sampler or another")
    sample.add_argument("run_dir", metavar="RUN_DIR", help="the folder of a finished or interrupted run")
    sample.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="sampler.*, eval.*, run.device, run.threads or run.seed, e.g. sampler.name=dpmpp_2m",
    )
    sample.add_argument("--num", type=_count, metavar="N", help="samples to draw (default eval.num_samples)")
    sample.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="checkpoint to load (default checkpoints/final.pt, else the newest step checkpoint)",
    )
    sample.add_argument("--png", action="store_true", help="also write one PNG per sample in png/ (image data)")
    export = sub.add_parser("export", help="write a run's EMA network and schedule for another library (diffusers)")
    export.add_argument("run_dir", metavar="RUN_DIR", help="the folder of a finished or interrupted run")
    export.add_argument(
        "out", metavar="OUT", help="a new folder; diffusers' DDPMPipeline.from_pretrained(OUT) loads it"
    )
    export.add_argument("--format", default="diffusers", choices=("diffusers",), help="the layout (default diffusers)")
    export.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="checkpoint to export (default ema.safetensors, else as sandbox sample picks)",
    )
    show = sub.add_parser("show", help="print the fully resolved recipe without running it")
    show.add_argument("recipe", help="path of a YAML recipe")
    show.add_argument("overrides", nargs="*", metavar="key=value")
    listing = sub.add_parser("list", help="every registered component by kind, with its provider")
    listing.add_argument(
        "--names", metavar="KIND", help="print only the usable names of KIND (sampler, schedule, ...), one a line"
    )
    sub.add_parser("plugins", help="the loaded plugins with their distributions and versions")
    doctor = sub.add_parser(
        "doctor",
        help="check every sampler x schedule x target against the exact oracle denoiser of a Gaussian mixture",
    )
    doctor.add_argument(
        "run_or_recipe",
        nargs="?",
        metavar="RUN_DIR_OR_RECIPE",
        help="rank every sampler x grid on this run's network (or an analytic recipe) at --nfe instead",
    )
    doctor.add_argument("--nfe", type=_count, default=10, help="with RUN_DIR_OR_RECIPE: the NFE budget (default 10)")
    doctor.add_argument(
        "--reference",
        metavar="NAME",
        help="with RUN_DIR_OR_RECIPE: the many-step reference's sampler (default the recipe's)",
    )
    doctor.add_argument(
        "--samples", type=int, default=None, metavar="N", help="samples per cell (default 2000; ranking: 256)"
    )
    doctor.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    for kind in ("sampler", "schedule", "target"):
        doctor.add_argument(
            f"--{kind}", action="append", default=None, metavar="NAME", help=f"check only this {kind} (repeatable)"
        )
    doctor.add_argument(
        "--grid",
        action="append",
        default=None,
        metavar="NAME",
        help="run the samplers on this time grid instead of their own (repeatable; 'all': every grid)",
    )
    doctor.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="also load this local plugin, as a recipe's plugins: list does (repeatable)",
    )
    tune = sub.add_parser(
        "tune-steps", help="tune a sampler's time grid at a given NFE to a run's network (or an analytic recipe)"
    )
    tune.add_argument(
        "target", metavar="RUN_DIR_OR_RECIPE", help="a run folder, or a recipe with an analytic denoiser"
    )
    tune.add_argument("overrides", nargs="*", metavar="key=value", help="sampler.*, eval.*, run.* overrides")
    tune.add_argument("--nfe", type=_count, required=True, help="network evaluations per sample of the grid")
    tune.add_argument("--sampler", metavar="NAME", help="the sampler to tune for (default the recipe's)")
    tune.add_argument("--name", metavar="NAME", help="the grid's name (default <sampler>-nfe<NFE>)")
    tune.add_argument("--reference", metavar="NAME", help="the many-step reference's sampler (default --sampler)")
    tune.add_argument("--batch", type=_count, default=256, help="starting noise draws tuned on (default 256)")
    tune.add_argument("--iterations", type=_count, default=200, help="objective evaluations (default 200)")
    tune.add_argument("--reference-steps", type=_count, default=500, help="steps of the reference (default 500)")
    sweep = sub.add_parser("sweep", help="run the cartesian product of a recipe's matrix axes (resumable)")
    sweep.add_argument(
        "recipe",
        nargs="?",
        help="path of a YAML recipe, usually with a top-level matrix: mapping (omit with --status)",
    )
    sweep.add_argument("overrides", nargs="*", metavar="key=value", help="dot-list overrides applied to every cell")
    sweep.add_argument(
        "--axis",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="an axis (replaces the recipe's on the same key); repeatable",
    )
    sweep.add_argument("--seeds", type=_count, default=1, help="seeds per cell: run.seed + 0..N-1 (default 1)")
    sweep.add_argument("--jobs", type=_count, default=1, help="cells run at once, each in its own process")
    sweep.add_argument("--dry-run", action="store_true", help="print the plan and run nothing")
    sweep.add_argument("--out", help="sweep folder (default <run.output>/sweeps/<recipe stem>)")
    sweep.add_argument(
        "--launcher",
        default="local",
        metavar="NAME",
        help="local (default: processes on this machine, waited for) or a registered launcher, e.g. submitit "
        "(a SLURM job array; resources from the recipe's launcher: section)",
    )
    sweep.add_argument("--wait", action="store_true", help="with a launcher: wait for its jobs, then summarize")
    sweep.add_argument(
        "--status", metavar="SWEEP_DIR", help="show the done, running, queued and failed cells of a sweep folder"
    )
    _summary_options(sweep)
    summary = sub.add_parser(
        "summary", help="aggregate a sweep, or any set of run folders and sweeps: table, CSV, Markdown and plot"
    )
    summary.add_argument(
        "paths",
        nargs="+",
        metavar="RUN_OR_SWEEP",
        help="sweep folders (sweep.json), run folders (recipe.yaml), or folders of runs such as runs/",
    )
    summary.add_argument(
        "--out", metavar="DIR", help="write summary.csv, .md and .png here (one sweep alone: into the sweep)"
    )
    _summary_options(summary)
    completion = sub.add_parser("completion", help="print the shell completion script for bash or zsh")
    completion.add_argument("shell", choices=("bash", "zsh"), help="the shell the script is for")
    return parser


def cmd_run(args) -> int:
    from sandbox.recipe import load_recipe

    if args.nproc and args.nproc > 1:
        return _launch(args)
    if args.resume:
        overrides = ([args.recipe] if args.recipe else []) + list(args.overrides)  # `--resume DIR key=value`
        from sandbox.engine.resume import resume_recipe  # imports torch

        recipe, state = resume_recipe(args.resume, overrides)
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


def _launch(args) -> int:
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
    return distributed.launch(args.nproc, ["run", *again, *args.overrides])


def cmd_sample(args) -> int:
    from pathlib import Path

    from sandbox.engine.sample import sample_run  # imports torch

    sample_run(
        Path(args.run_dir),
        list(args.overrides),
        num=args.num,
        png=args.png,
        checkpoint_path=Path(args.checkpoint) if args.checkpoint else None,
    )
    return 0


def cmd_export(args) -> int:
    from pathlib import Path

    from sandbox.tools.export import export_run  # imports torch

    checkpoint = Path(args.checkpoint) if args.checkpoint else None
    export_run(Path(args.run_dir), Path(args.out), fmt=args.format, checkpoint_path=checkpoint)
    return 0


def cmd_show(args) -> int:
    from rich.syntax import Syntax

    from sandbox.console import console
    from sandbox.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    console.print(Syntax(recipe.to_yaml(), "yaml", background_color="default"))
    return 0


def cmd_list(args) -> int:
    from sandbox.console import console, table
    from sandbox.registry import ALL_KINDS, get_registry

    registry = get_registry()
    if args.names is not None:  # what shell completion asks for at TAB time: plain lines, no table
        if args.names not in ALL_KINDS:
            raise SandboxError(f"--names {args.names}: unknown kind; expected one of {', '.join(ALL_KINDS)}")
        print("\n".join(registry.names(args.names)))
        return 0
    for kind in ALL_KINDS:
        rows = []
        for name in sorted(set(registry.components[kind]) | set(registry.clashes[kind])):
            component = registry.components[kind].get(name)
            clash = registry.clash(kind, name)
            if component is None:
                rows.append(
                    [
                        name,
                        " + ".join(c.provider for c in clash),
                        f"[red]disabled: registered by {len(clash)} plugins (set SANDBOX_PREFER to choose one)[/]",
                    ]
                )
                continue
            others = [c.provider for c in clash if c is not component]
            note = f" [yellow](preferred over {', '.join(others)})[/]" if others else ""
            rows.append([name, component.provider, component.description + note])
        console.print(table(f"{kind}s", ["name", "provider", "description"], rows))
    _report_problems(registry)
    return 0


def cmd_plugins(args) -> int:
    from sandbox.console import console, table
    from sandbox.registry import ALL_KINDS, get_registry

    registry = get_registry()
    rows = []
    for plugin in registry.plugins:
        provided = [f"{c.kind} {c.name}" for c in registry if c.plugin == plugin.name]
        provided += [
            f"{kind} {name} (clash)"
            for kind in ALL_KINDS
            for name, comps in registry.clashes[kind].items()
            if registry.components[kind].get(name) not in comps and any(c.plugin == plugin.name for c in comps)
        ]
        rows.append([plugin.name, plugin.distribution or "-", plugin.version or "-", ", ".join(provided)])
    console.print(table("plugins", ["plugin", "distribution", "version", "provides"], rows))
    _report_problems(registry)
    return 0


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: expected 1 or more")
    return value


def _summary_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metric",
        action="append",
        default=None,
        metavar="KEY[:min|max]",
        help="summary.json key to report (repeatable; the first ranks)",
    )
    parser.add_argument("--baseline", metavar="KEY=VALUE,...", help="the group to compare with (default: the first)")


def cmd_sweep(args) -> int:
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
    plan = plan_sweep(
        args.recipe, args.overrides, axes=[parse_axis(a) for a in args.axis], seeds=args.seeds, out=args.out
    )
    if args.dry_run:
        console.print(plan_table(plan))
        return 2 if any(cell.status == "invalid" for cell in plan.cells) else 0
    from sandbox.tools.summary import summarize

    if args.launcher != "local":
        from sandbox.tools.sweep import launch_sweep

        rows = launch_sweep(plan, args.launcher, wait=args.wait)
        if args.wait:
            summarize(plan.sweep_dir, metrics=args.metric, baseline=args.baseline)
        return 1 if any(row.state in ("failed", "invalid") for row in rows) else 0
    from sandbox.tools.sweep import run_sweep  # imports torch

    run_sweep(plan, jobs=args.jobs)  # holds the sweep folder's lock; stops on SIGINT / SIGTERM
    if plan.interrupted is not None:
        import shlex

        from sandbox.console import error_console

        again = ["sandbox", "sweep", args.recipe, *args.overrides, *(f"--axis={a}" for a in args.axis)]
        again += [f"--seeds={args.seeds}", f"--jobs={args.jobs}", *([f"--out={args.out}"] if args.out else [])]
        message = f"sweep interrupted; resume it with the same command: {shlex.join(again)}"
        error_console.print(message, markup=False, soft_wrap=True)
        return 128 + plan.interrupted
    summarize(plan.sweep_dir, metrics=args.metric, baseline=args.baseline)
    return 1 if failed(plan) else 0


def cmd_summary(args) -> int:
    from pathlib import Path

    from sandbox.tools.summary import summarize, summarize_runs
    from sandbox.tools.sweep import SWEEP_FILE

    if len(args.paths) == 1 and args.out is None and (Path(args.paths[0]) / SWEEP_FILE).is_file():
        summarize(args.paths[0], metrics=args.metric, baseline=args.baseline)
    else:
        summarize_runs(args.paths, metrics=args.metric, baseline=args.baseline, out=args.out)
    return 0


def cmd_completion(args) -> int:
    from sandbox.cli.completion import script

    sys.stdout.write(script(_parser(), args.shell))
    return 0


def cmd_tune_steps(args) -> int:
    from sandbox.tools.tune import tune_command  # imports torch

    tune_command(
        args.target,
        list(args.overrides),
        nfe=args.nfe,
        sampler=args.sampler,
        name=args.name,
        reference_sampler=args.reference,
        batch=args.batch,
        iterations=args.iterations,
        reference_steps=args.reference_steps,
    )
    return 0


def cmd_doctor(args) -> int:
    if args.run_or_recipe is not None:
        from sandbox.tools.tune import rank_command  # imports torch

        return rank_command(
            args.run_or_recipe,
            [],
            nfe=args.nfe,
            samplers=args.sampler,
            grids=args.grid,
            reference_sampler=args.reference,
            batch=args.samples or 256,
        )
    from sandbox.tools.doctor import doctor_command  # imports torch

    return doctor_command(
        samples=args.samples or 2000,
        json_path=args.json,
        samplers=args.sampler,
        schedules=args.schedule,
        targets=args.target,
        grids=args.grid,
        plugins=args.plugin,
    )


def _report_problems(registry) -> None:
    """Plugins that failed to load, loader warnings and name clashes, on stderr."""
    from rich.markup import escape

    from sandbox.console import error_console

    for failure in registry.failures:
        error_console.print(
            f"[yellow]plugin from {escape(failure.distribution)} ({escape(failure.entry_point)}) "
            f"failed to load:[/] {escape(failure.reason)}",
            soft_wrap=True,
        )
    for warning in registry.warnings:
        error_console.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
    for kind, clashes in registry.clashes.items():
        for name, comps in clashes.items():
            chosen = registry.components[kind].get(name)
            providers = " and ".join(f"{c.plugin} ({c.provider})" for c in comps)
            outcome = f"using {chosen.provider} (SANDBOX_PREFER)" if chosen else "the name is disabled"
            error_console.print(
                f"[yellow]warning:[/] {kind} '{name}' is registered by {escape(providers)}; {escape(outcome)}",
                soft_wrap=True,
            )


COMMANDS = {
    "run": cmd_run,
    "sample": cmd_sample,
    "export": cmd_export,
    "show": cmd_show,
    "list": cmd_list,
    "plugins": cmd_plugins,
    "sweep": cmd_sweep,
    "summary": cmd_summary,
    "doctor": cmd_doctor,
    "tune-steps": cmd_tune_steps,
    "completion": cmd_completion,
}


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (an unreadable checkpoint skipped, a cache rebuilt) as one line on stderr, not a code listing;
    under torchrun, rank 0's only (every process meets the same ones)."""
    import os

    from rich.markup import escape

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and os.environ.get("RANK", "0") != "0":
        return

    from sandbox.console import error_console

    error_console.print(f"[yellow]warning:[/] {escape(str(message))}", soft_wrap=True)


def _rank_prefix(exc: SandboxError) -> str | None:
    """How a process names itself in an error: '' in a single process and on rank 0; under torchrun the
    other ranks say ``rank N:``, or stay silent for an error every process meets alike (rank 0 reports it)."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return ""
    from sandbox.engine import distributed  # imports torch, only under torchrun

    if distributed.is_main():
        return ""
    return None if distributed.every_rank(exc) else f"rank {distributed.rank()}: "


def main(argv: list[str] | None = None) -> int:
    import warnings

    warnings.showwarning = _show_warning
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    stray = [item for item in extra if (item.startswith("-") or "=" not in item) and not item.startswith("~")]
    if extra and (stray or not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]  # key=value overrides may also follow the options
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args)
    except SandboxError as exc:
        from rich.markup import escape

        from sandbox.console import error_console

        prefix = _rank_prefix(exc)
        if prefix is not None:  # escaped: a message may hold brackets, e.g. pip install 'package[extra]'
            error_console.print(f"[bold red]{prefix}error:[/] {escape(str(exc))}", soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
