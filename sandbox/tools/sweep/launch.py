"""Launchers: the cells as jobs of a scheduler (``sandbox sweep --launcher NAME``), each submitted once.

``--launcher local``, the default, is the sweep's own runner
(:func:`sandbox.tools.sweep.run_sweep`: one process per cell on this machine,
waited for). Any other name is a registered component of kind ``launcher``
(hook ``register_launchers``); ``build(params)`` returns a
:class:`sandbox.protocols.Launcher`, and the recipe's optional
``launcher: {name: ..., <params>}`` section gives its parameters. The sandbox
ships ``submitit`` (a SLURM job array through submitit; ``executor: local``
runs the same jobs as local processes).

A launcher submits *jobs*: each is a list of cell tasks that
:func:`sandbox.tools.sweep.run_job`, which the sweep hands to the launcher,
runs in order in the job (a cell that trains, then the cells that only sample
from its training). The sweep records every submission in the sweep folder's
``jobs.json`` (:mod:`sandbox.engine.sweepdir`), written only by the submitting
``sandbox sweep`` under the folder's lock, and asks the launcher for the state
of the recorded jobs before submitting anything, so a cell whose job is
queued or running is never submitted again. ``--dry-run`` shows the
launcher's parameters and the jobs (:func:`launch_tables`).

One run is a one-cell job (``sandbox run RECIPE --launcher NAME``,
:func:`submit_run`): the same launchers run :func:`run_one` on its task,
which starts the run in its folder or resumes it from its latest checkpoint
after a requeue; the submission is recorded in the run folder's
``jobs.json``, and a folder whose job is queued or running is not submitted
again.
"""

from __future__ import annotations

import dataclasses
import shlex
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from sandbox.engine.rundir import RunDir, SweepDir, read_json, write_json
from sandbox.engine.runlock import lock_holder
from sandbox.engine.sweepdir import CellStatus, add_jobs, live_jobs, read_jobs, record, sweep_status
from sandbox.errors import Interrupted, RecipeError, SandboxError
from sandbox.recipe import load_recipe
from sandbox.registry import Registry, get_registry
from sandbox.tools.sweep.cell import cell_task, run_job
from sandbox.tools.sweep.lock import SweepLock
from sandbox.tools.sweep.plan import Cell, Plan, plan_record, refresh
from sandbox.tools.sweep.signals import handling, stop_cell
from sandbox.tools.sweep.status import run_status, run_table, status_table

if TYPE_CHECKING:
    from sandbox.protocols import Launcher

LOCAL = "local"  # the sweep's own runner; not a registered launcher


def launcher_params(name: str, section: tuple[str, Any] | None, registry: Registry | None = None) -> tuple[Any, Any]:
    """The registered launcher component ``name`` and its typed parameters: the recipe's validated ``launcher:``
    section when it names ``name``, else the launcher's defaults. Builds nothing (imports no scheduler)."""
    registry = registry if registry is not None else get_registry()
    if name not in registry.names("launcher"):
        known = ", ".join([LOCAL, *registry.names("launcher")])
        if registry.clash("launcher", name):
            registry.get("launcher", name, key="--launcher")  # two plugins registered it: says which
        raise RecipeError(f"--launcher {name}: unknown launcher; expected one of {known}")
    component = registry.get("launcher", name)
    params = section[1] if section is not None and section[0] == name else component.default_params()
    return component, params


def make_launcher(
    name: str, section: tuple[str, Any] | None, registry: Registry | None = None
) -> tuple[Launcher, dict[str, Any]]:
    """The registered launcher ``name`` built with the recipe's ``launcher:`` section's parameters when the section
    names it (else its defaults), and those parameters as a dict."""
    component, params = launcher_params(name, section, registry)
    as_dict = dataclasses.asdict(params) if params is not None else {}
    launcher: Launcher = component.build(params)
    return launcher, as_dict


def launcher_overrides(name: str, overrides: list[str]) -> list[str]:
    """``--launcher NAME``'s override ``launcher.name=NAME`` before the command line's own (none for ``local``), so
    ``launcher.partition=debug`` alone makes a valid section; a recipe section naming another launcher is
    replaced by ``NAME``'s defaults (a section whose name changes starts afresh)."""
    if name == LOCAL:
        return overrides
    launcher_params(name, None)  # an unknown name stops here, with the known ones
    return [f"launcher.name={name}", *overrides]


def job_groups(plan: Plan, live: dict[str, Any]) -> list[list[Cell]]:
    """The jobs a launcher is handed: each a cell that trains, then the cells that only sample from its training;
    cells done, invalid, duplicated or in a ``live`` job are left out, and so are those whose training is."""
    jobs: dict[int, list[Cell]] = {}
    for cell in plan.cells:
        if not cell.status.startswith("to ") or cell.duplicate_of is not None or cell.id in live:
            continue
        root = cell.trained_by if cell.trained_by is not None else cell.index
        if plan.cells[root].id in live:
            continue  # its training is in a job still: submitted once that job has ended
        jobs.setdefault(root, []).append(cell)
    return list(jobs.values())


def launch_tables(plan: Plan, launcher_name: str, registry: Registry | None = None) -> list[Text | Table]:
    """``sandbox sweep --dry-run --launcher NAME``: the launcher with its parameters (the executor and resources,
    from the cells' validated ``launcher:`` section), and the jobs it would be handed, with their cells."""
    valid = [c.recipe for c in plan.cells if c.recipe is not None]
    section = valid[0].launcher if valid else None
    component, params = launcher_params(launcher_name, section, registry)
    values = dataclasses.asdict(params) if params is not None else {}
    origin = "the recipe's launcher: section" if section is not None and section[0] == launcher_name else "defaults"
    heading = Text(
        f"Launcher {launcher_name} ({component.provider}): the executor and each job's resources, from {origin}"
    )
    resources = Table(show_header=False)
    resources.add_column("parameter", no_wrap=True)
    resources.add_column("value", overflow="fold")
    for key, value in values.items():
        resources.add_row(key, "null" if value is None else escape(str(value)))
    live = live_jobs(plan.sweep_dir, registry)
    groups = job_groups(plan, live)
    cells = sum(len(g) for g in groups)
    title = f"Job array: {len(groups)} {'job' if len(groups) == 1 else 'jobs'} ({cells} cells) in one submission"
    if live:
        title += f"; {len(live)} cells already in queued or running jobs, left alone"
    layout = Table()
    for column in ("job", "trains", "then samples from its training"):
        layout.add_column(column, overflow="fold")
    for i, group in enumerate(groups):
        trains = group[0] if group[0].trained_by is None else None
        samplers = group[1:] if trains is not None else group
        what = f"#{trains.index} {trains.id}" if trains else f"none (#{group[0].trained_by}'s training is done)"
        layout.add_row(str(i), what, ", ".join(f"#{c.index} {c.id}" for c in samplers) or "-")
    return [heading, resources, Text(title), layout]


def launch_sweep(
    plan: Plan,
    launcher_name: str,
    *,
    console: Console | None = None,
    registry: Registry | None = None,
    wait: bool = False,
    poll_s: float = 10.0,
) -> list[CellStatus]:
    """Submit every cell not yet done, and not in a queued or running job, through a registered launcher.

    A job runs a cell that trains, then the cells that only sample from its
    training (:func:`run_job`). Every submission is recorded in ``jobs.json``
    under the sweep folder's lock, and the jobs already recorded are asked for
    their state first, so running this again while jobs are in flight reports
    them and submits nothing twice. With ``wait``, returns once no job is
    queued or running. Returns each cell's :class:`CellStatus`.
    """
    from sandbox.console import console as default_console

    console = console or default_console
    valid = [c.recipe for c in plan.cells if c.recipe is not None]
    section = valid[0].launcher if valid else None
    if section is not None and section[0] != launcher_name:
        console.print(f"the recipe's launcher: section is for {section[0]}; {launcher_name} runs with its defaults")
    launcher, params = make_launcher(launcher_name, section, registry)
    with SweepLock(plan.sweep_dir):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # plan_sweep has warned of unreadable files
            refresh(plan)
        live = live_jobs(plan.sweep_dir, registry)
        groups = job_groups(plan, live)
        write_json(SweepDir(plan.sweep_dir).plan, plan_record(plan, "submitted"))
        if groups:
            submitted = launcher.submit(
                run_job,
                [[cell_task(plan, c) for c in cells] for cells in groups],
                SweepDir(plan.sweep_dir).launcher_files,
                f"sandbox-{plan.sweep_dir.name}",
            )
            add_jobs(
                plan.sweep_dir,
                [record(launcher_name, params, job, [c.id for c in cells]) for job, cells in zip(submitted, groups)],
            )
    cells = sum(len(g) for g in groups)
    console.print(
        f"sweep [bold]{plan.sweep_dir}[/]: submitted {cells} {'cell' if cells == 1 else 'cells'} in {len(groups)} "
        f"{'job' if len(groups) == 1 else 'jobs'} through {launcher_name}, {len(live)} already in jobs"
    )
    rows = sweep_status(plan.sweep_dir, registry)
    while wait and any(r.state in ("queued", "running") for r in rows):
        time.sleep(poll_s)
        rows = sweep_status(plan.sweep_dir, registry)
    console.print(status_table(plan.sweep_dir, rows))
    if not wait:
        console.print(f"follow it with: sandbox sweep --status {plan.sweep_dir}")
    return rows


# --- one run as a one-cell job: sandbox run RECIPE --launcher NAME ---------------------------------------------


def run_one(tasks: list[dict[str, Any]], stop: Callable[[], bool] = lambda: False) -> list[dict[str, Any]]:
    """The job of ``sandbox run --launcher``: each task (one, a run folder) started, or resumed from its latest
    checkpoint when the folder has one, so a requeued job goes on where it stopped; a finished run is skipped.
    SIGINT / SIGTERM during training finish the step, checkpoint and stop (``interrupted``); a failure writes
    ``error.json`` in the folder and is raised, so the scheduler records the job as failed, with the traceback in
    its log. A :data:`sandbox.protocols.RunJob`, like :func:`run_job`: keep it a module-level function."""
    results: list[dict[str, Any]] = []
    for task in tasks:
        if stop():
            break
        if isinstance(read_json(RunDir(task["run_dir"]).summary), dict):
            results.append({"status": "done"})
            continue
        try:
            with handling(stop_cell):
                results.append(_run_task(task))
        except Interrupted as exc:
            results.append({"status": "interrupted", "signal": exc.signum})
            break
    return results


def _run_task(task: dict[str, Any]) -> dict[str, Any]:
    from sandbox.engine.resume import resume_recipe
    from sandbox.engine.run import run_recipe  # imports torch

    run = RunDir(task["run_dir"])
    trusted = list(task.get("plugins", []))
    try:
        state = None
        if task.get("recipe"):
            recipe = load_recipe(task["recipe"], task["overrides"])  # loads (so trusts) the recipe's local plugins
            if run.recipe.exists():  # started before: the folder's recipe, already with these overrides
                recipe, state = resume_recipe(run.path, [], trusted)
        else:  # sandbox run --resume RUN_DIR --launcher NAME
            recipe, state = resume_recipe(run.path, task["overrides"], trusted)
        if run.error.exists():
            run.error.unlink()  # an earlier attempt's
        run_recipe(recipe, run_dir=run.path, resume=True, state=state)
    except Interrupted:
        raise
    except Exception as exc:
        message = str(exc) if isinstance(exc, SandboxError) else f"{type(exc).__name__}: {exc}"
        write_json(run.error, {"message": message, "type": type(exc).__name__, "traceback": traceback.format_exc()})
        raise
    return {"status": "ran", "resumed_from": state["step"] if state is not None else None}


def run_task(recipe_path: str | Path, overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """What :func:`run_one` needs to start a run from a recipe in ``run_dir``: plain strings, JSON-able."""
    return {"recipe": str(Path(recipe_path).resolve()), "overrides": list(overrides), "run_dir": str(run_dir)}


def resume_task(
    run_dir: str | Path, overrides: list[str], plugins: list[str], launcher_name: str
) -> tuple[dict[str, Any], tuple[str, Any] | None]:
    """``sandbox run --resume RUN_DIR --launcher NAME``: the task that resumes the run in a job, and the launcher
    section to submit it with. ``launcher.*`` overrides change only the submission; the others are the resume's
    (:data:`sandbox.engine.resume.RESUMABLE`). A folder whose job never started resumes its recorded task."""
    from sandbox.engine.resume import RESUMABLE

    run = RunDir(Path(run_dir).resolve())
    submission = [o for o in overrides if o.lstrip("+~").startswith("launcher.")]
    rest = [o for o in overrides if o not in submission]
    for item in rest:
        key = item.lstrip("+~").partition("=")[0]
        if not any(key == k or key.startswith(f"{k}.") for k in RESUMABLE):
            raise RecipeError(
                f"recipe key '{key}': cannot change when resuming; only {', '.join(RESUMABLE)} may. Start a new run "
                "instead"
            )
    recorded = [j for j in read_jobs(run.path) if isinstance(j.get("task"), dict)]
    task: dict[str, Any]
    if run.recipe.is_file():
        recipe = load_recipe(run.recipe, launcher_overrides(launcher_name, submission), trusted=plugins)
        task = {"recipe": None, "overrides": rest, "run_dir": str(run.path), "plugins": list(plugins)}
    elif recorded:
        task = dict(recorded[-1]["task"], run_dir=str(run.path))
        task["overrides"] = [*task["overrides"], *rest]
        recipe = load_recipe(task["recipe"], [*task["overrides"], *launcher_overrides(launcher_name, submission)])
    else:
        raise SandboxError(f"{run.path} is not a run folder (it has no {RunDir.RECIPE} and no recorded job)")
    return task, recipe.launcher


def in_use(run_dir: Path, registry: Registry | None = None) -> str | None:
    """Why ``run_dir`` cannot be submitted now: its job is queued or running (or its state unknown), or a process
    here trains it; None when it can."""
    for job, state in live_jobs(run_dir, registry).values():
        return f"it is in job {job['job_id']} ({job['launcher']}, {state.phase}: {state.raw})"
    holder = lock_holder(run_dir) if run_dir.is_dir() else None
    if holder is not None:
        return f"process {holder.get('pid')} on {holder.get('host')} is training it"
    return None


def submit_run(
    task: dict[str, Any],
    launcher_name: str,
    section: tuple[str, Any] | None,
    *,
    console: Console | None = None,
    registry: Registry | None = None,
    wait: bool = False,
    poll_s: float = 10.0,
) -> CellStatus:
    """Submit one run (``task``: :func:`run_task` or :func:`resume_task`) as a one-cell job through a registered
    launcher, recorded in the run folder's ``jobs.json`` like a sweep's jobs; refused while the folder is in a
    queued or running job or trained by a process here. Prints the job, its logs, and how to follow and resume
    it; with ``wait``, returns once the job has ended. Returns the run's :class:`CellStatus`."""
    from sandbox.console import console as default_console

    console = console or default_console
    run_dir = Path(task["run_dir"])
    launcher, params = make_launcher(launcher_name, section, registry)
    busy = in_use(run_dir, registry)
    if busy is not None:
        raise SandboxError(
            f"{run_dir}: not submitted, {busy}; follow it with: sandbox run --status {shlex.quote(str(run_dir))}"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    (job,) = launcher.submit(run_one, [[task]], SweepDir(run_dir).launcher_files, f"sandbox-{run_dir.name}")
    add_jobs(run_dir, [{**record(launcher_name, params, job, [run_dir.name]), "task": task}])
    where = shlex.quote(str(run_dir))
    console.print(
        f"run [bold]{escape(str(run_dir))}[/]: submitted as job {escape(str(job['job_id']))} through "
        f"{launcher_name}" + (f" (executor {params['executor']})" if "executor" in params else ""),
        soft_wrap=True,
    )
    for log in ("stdout", "stderr"):
        console.print(f"  {log}: {escape(str(job.get(log)))}", soft_wrap=True)
    row = run_status(run_dir, registry)
    while wait and row.state in ("queued", "running"):
        time.sleep(poll_s)
        row = run_status(run_dir, registry)
    console.print(run_table(run_dir, row))
    if not wait:
        console.print(f"follow it with: sandbox run --status {escape(where)}", soft_wrap=True)
    if row.state != "done":
        console.print(
            f"resume it (once its job has ended, e.g. after scancel): sandbox run --resume {escape(where)} "
            f"--launcher {launcher_name}",
            soft_wrap=True,
        )
    return row
