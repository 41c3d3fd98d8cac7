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
queued or running is never submitted again.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import TYPE_CHECKING, Any

from rich.console import Console

from sandbox.engine.rundir import SweepDir, write_json
from sandbox.engine.sweepdir import CellStatus, add_jobs, live_jobs, record, sweep_status
from sandbox.errors import RecipeError
from sandbox.registry import Registry, get_registry
from sandbox.tools.sweep.cell import cell_task, run_job
from sandbox.tools.sweep.lock import SweepLock
from sandbox.tools.sweep.plan import Cell, Plan, plan_record, refresh
from sandbox.tools.sweep.status import status_table

if TYPE_CHECKING:
    from sandbox.protocols import Launcher

LOCAL = "local"  # the sweep's own runner; not a registered launcher


def make_launcher(
    name: str, section: tuple[str, Any] | None, registry: Registry | None = None
) -> tuple[Launcher, dict[str, Any]]:
    """The registered launcher ``name`` built with the recipe's ``launcher:`` section's parameters when the section
    names it (else its defaults), and those parameters as a dict."""
    registry = registry if registry is not None else get_registry()
    if name not in registry.names("launcher"):
        known = ", ".join([LOCAL, *registry.names("launcher")])
        if registry.clash("launcher", name):
            registry.get("launcher", name, key="--launcher")  # two plugins registered it: says which
        raise RecipeError(f"--launcher {name}: unknown launcher; expected one of {known}")
    component = registry.get("launcher", name)
    params = section[1] if section is not None and section[0] == name else component.default_params()
    as_dict = dataclasses.asdict(params) if params is not None else {}
    launcher: Launcher = component.build(params)
    return launcher, as_dict


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
        jobs: dict[int, list[Cell]] = {}
        for cell in plan.cells:
            if not cell.status.startswith("to ") or cell.duplicate_of is not None or cell.id in live:
                continue
            root = cell.trained_by if cell.trained_by is not None else cell.index
            if plan.cells[root].id in live:
                continue  # its training is in a job still: submitted once that job has ended
            jobs.setdefault(root, []).append(cell)
        write_json(SweepDir(plan.sweep_dir).plan, plan_record(plan, "submitted"))
        if jobs:
            groups = list(jobs.values())
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
    cells = sum(len(g) for g in jobs.values())
    console.print(
        f"sweep [bold]{plan.sweep_dir}[/]: submitted {cells} {'cell' if cells == 1 else 'cells'} in {len(jobs)} "
        f"{'job' if len(jobs) == 1 else 'jobs'} through {launcher_name}, {len(live)} already in jobs"
    )
    rows = sweep_status(plan.sweep_dir, registry)
    while wait and any(r.state in ("queued", "running") for r in rows):
        time.sleep(poll_s)
        rows = sweep_status(plan.sweep_dir, registry)
    console.print(status_table(plan.sweep_dir, rows))
    if not wait:
        console.print(f"follow it with: sandbox sweep --status {plan.sweep_dir}")
    return rows
