"""The local runner (``--launcher local``): every cell not yet done, in this process or one spawned process per
cell, under the sweep folder's lock, stopped by SIGINT / SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from sandbox.console import PlainProgress, status
from sandbox.engine.device import choose_threads
from sandbox.engine.rundir import RunDir, SweepDir, write_json
from sandbox.engine.sweepdir import live_jobs
from sandbox.errors import RecipeError
from sandbox.registry import Registry
from sandbox.tools.sweep.cell import cell_task, run_interruptible
from sandbox.tools.sweep.lock import Inherited, SweepLock
from sandbox.tools.sweep.plan import Cell, Plan, assignment_text, plan_record, refresh
from sandbox.tools.sweep.signals import SweepStop, handling, kill_cell, stop_with_parent


def gpu_for(index: int, device: str, n_gpus: int) -> str | None:
    """The ``run.device`` for cell ``index`` on a machine with ``n_gpus`` CUDA GPUs (None: leave it)."""
    if n_gpus > 1 and device in ("auto", "cuda"):
        return f"cuda:{index % n_gpus}"
    return None


def _cell_process(task: dict[str, Any], conn: Any, threads: int, lock: Inherited) -> None:
    """A cell in its own spawned process, holding the sweep's ``lock`` until it ends. It leads its own process
    group, so a Ctrl-C in the terminal reaches only the sweep, which passes it on once the cell is ready."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    stop_with_parent()
    import torch

    from sandbox.engine import device

    device.assigned = threads  # the cell's share of the cores, kept by run.threads: 0
    torch.set_num_threads(threads)
    result = run_interruptible(task, on_ready=lambda: conn.send(("ready", os.getpid())))
    with contextlib.suppress(OSError):  # the sweep may be gone
        conn.send(("result", result))


@contextlib.contextmanager
def assigned_threads(threads: int) -> Iterator[None]:
    """``--threads N`` for the cells this process runs itself: their ``run.threads: 0`` takes N."""
    from sandbox.engine import device

    before, device.assigned = device.assigned, (threads or device.assigned)
    try:
        yield
    finally:
        device.assigned = before


def _cell_line(cell: Cell, done: int, total: int) -> str:
    style = {"ran": "green", "done": "green", "failed": "red", "invalid": "red", "interrupted": "yellow"}.get(
        cell.status, "default"
    )
    parts = [f"[{done}/{total}]", cell.id, assignment_text(cell), f"seed={cell.seed}", f"[{style}]{cell.status}[/]"]
    if cell.note:
        parts.append(escape(cell.note))
    if cell.val_loss is not None:
        parts.append(f"val loss (EMA) {cell.val_loss:.4g}")
    if cell.seconds is not None:
        parts.append(f"{cell.seconds:.1f} s")
    if cell.error:
        parts.append(f"[red]{escape(cell.error)}[/]")
    return "  ".join(parts)


def _died(folder: Path, exitcode: int | None, stop: SweepStop) -> dict[str, Any]:
    """The result of a cell process that ended without one."""
    how = f"killed by {signal.Signals(-exitcode).name}" if exitcode and exitcode < 0 else f"exit code {exitcode}"
    if stop.signum is not None:
        return {"status": "interrupted", "signal": stop.signum, "note": f"stopped ({how})"}
    message = f"the cell's process died ({how})"
    folder.mkdir(parents=True, exist_ok=True)
    write_json(RunDir(folder).error, {"message": message, "type": "ProcessDied", "traceback": ""})
    return {"status": "failed", "error": message}


def run_sweep(
    plan: Plan,
    *,
    jobs: int = 1,
    threads: int = 0,
    console: Console | None = None,
    registry: Registry | None = None,
) -> Plan:
    """Run every cell not yet done, ``jobs`` at a time; returns the plan with each cell's final status.

    Holds the folder's :class:`SweepLock` throughout (cell statuses are read
    again under it) and stops on SIGINT / SIGTERM, setting
    ``plan.interrupted``. With ``jobs > 1`` each cell runs in its own
    spawned process (the installed plugins' registry; ``registry`` is used
    only in this process) with ``threads`` torch threads (``--threads``; 0: the idle cores // ``jobs``,
    :func:`sandbox.engine.device.choose_threads`), which its ``run.threads: 0`` keeps; on a machine
    with several CUDA GPUs, cell ``i`` of the ones to run gets
    ``cuda:{i % n_gpus}`` when its device is ``auto`` or ``cuda``.
    """
    from sandbox.console import console as default_console

    console = console or default_console
    if jobs < 1:
        raise RecipeError(f"--jobs {jobs}: expected 1 or more")
    with SweepLock(plan.sweep_dir) as lock:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # plan_sweep has warned of unreadable files
            refresh(plan)
        plan.interrupted = None
        total = len(plan.cells)
        in_jobs = live_jobs(plan.sweep_dir, registry)  # cells a launcher's jobs are running: not run here too
        for cell in plan.cells:
            if cell.id in in_jobs and cell.status.startswith("to "):
                job, state = in_jobs[cell.id]
                cell.status, cell.note = "running", f"{state.phase} as job {job['job_id']} ({job['launcher']})"
        to_run = [c for c in plan.cells if c.status.startswith("to ") and c.duplicate_of is None]
        counts = ", ".join(f"{n} {status}" for status, n in plan.counts().items())
        console.print(f"sweep [bold]{plan.sweep_dir}[/]: {total} cells ({counts}), {jobs} at a time")
        finished = 0
        for cell in plan.cells:
            if cell.status in ("invalid", "done") or cell.id in in_jobs:
                finished += 1
                console.print(_cell_line(cell, finished, total))

        n_gpus = 0
        if jobs > 1 and any(c.recipe is not None and c.recipe.run.device in ("auto", "cuda") for c in to_run):
            import torch

            n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        tasks = {}
        for i, cell in enumerate(to_run):
            device = gpu_for(i, cell.recipe.run.device, n_gpus) if cell.recipe is not None else None
            tasks[cell.index] = cell_task(plan, cell, device)

        stop = SweepStop()

        def save(state: str) -> None:
            write_json(SweepDir(plan.sweep_dir).plan, plan_record(plan, state, stop.signum))

        def started(cell: Cell, pid: int) -> None:
            cell.status, cell.pid = "running", pid
            save("running")

        # --jobs N, where the output is not a terminal: how many of the cells to run have ended, on time
        plain = PlainProgress(console) if jobs > 1 and to_run and not console.is_terminal else None
        ended = plain.add_task(f"sweep {plan.sweep_dir.name}: cells", total=len(to_run)) if plain else None

        def record(cell: Cell, result: dict[str, Any]) -> None:
            nonlocal finished
            cell.status, cell.seconds, cell.note = result["status"], result.get("seconds"), result.get("note")
            cell.val_loss, cell.error = result.get("val_loss"), result.get("error")
            for note in result.get("notes", []):
                console.print(f"{cell.id}: {escape(note)}")
            finished += cell.status != "interrupted"
            console.print(_cell_line(cell, finished, total))
            if plain is not None and ended is not None:
                plain.advance(ended)
            if cell.status == "interrupted" and stop.signum is None:  # the cell's own handler had the signal
                stop.signum = result.get("signal")
            save("running")

        try:
            with handling(stop), plain or contextlib.nullcontext():  # the cells that train, then those sampling
                for batch in (
                    [c for c in to_run if c.trained_by is None],
                    [c for c in to_run if c.trained_by is not None],
                ):
                    if stop.signum is not None or not batch:
                        continue
                    if jobs == 1:
                        with assigned_threads(threads):
                            _run_here(batch, tasks, stop, registry, console, started, record)
                    else:
                        _run_processes(plan, batch, tasks, jobs, threads, stop, lock, started, record)
        finally:
            for cell in plan.cells:  # a duplicate shares its twin's folder and outcome
                if cell.duplicate_of is not None and cell.recipe is not None:
                    twin = plan.cells[cell.duplicate_of]
                    cell.status, cell.error, cell.val_loss = twin.status, twin.error, twin.val_loss
            plan.interrupted = stop.signum
            save("interrupted" if stop.signum is not None else "finished")
    if plan.interrupted is not None:
        stopped = sum(c.status == "interrupted" for c in plan.cells)
        waiting = sum(c.status.startswith("to ") for c in plan.cells)
        how = "a second Ctrl-C killed them" if stop.killed else "each after a checkpoint"
        console.print(
            f"[yellow]sweep stopped by {signal.Signals(plan.interrupted).name}[/]: {stopped} running "
            f"{'cell' if stopped == 1 else 'cells'} stopped ({how}), {waiting} not started; running the "
            "same command again resumes them"
        )
    return plan


def _run_here(
    cells: list[Cell],
    tasks: dict[int, dict[str, Any]],
    stop: SweepStop,
    registry: Registry | None,
    console: Console,
    started: Callable[[Cell, int], None],
    record: Callable[[Cell, dict[str, Any]], None],
) -> None:
    """``--jobs 1``: the cells one after another in this process, until one is interrupted or a signal arrives."""
    for cell in cells:
        if stop.signum is not None:
            return
        started(cell, os.getpid())
        try:
            with status(f"running cell {cell.id} ({assignment_text(cell)}, seed {cell.seed})", console):
                result = run_interruptible(tasks[cell.index], registry)
        except KeyboardInterrupt:  # a second Ctrl-C during training: no checkpoint of this step
            stop.killed = True
            result = {"status": "interrupted", "signal": signal.SIGINT, "note": "stopped at once (second Ctrl-C)"}
        record(cell, result)
        if cell.status == "interrupted":
            return


def _run_processes(
    plan: Plan,
    cells: list[Cell],
    tasks: dict[int, dict[str, Any]],
    jobs: int,
    threads: int,
    stop: SweepStop,
    lock: SweepLock,
    started: Callable[[Cell, int], None],
    record: Callable[[Cell, dict[str, Any]], None],
) -> None:
    """``--jobs N``: up to N cell processes at once, one per cell (nothing idles, nothing is queued inside a
    pool); none starts after a signal, and none outlives this function."""
    import multiprocessing
    from multiprocessing.connection import wait

    context = multiprocessing.get_context("spawn")
    threads = threads or max(1, choose_threads(0) // jobs)
    queue = list(cells)
    running: dict[Any, tuple[Cell, Any]] = {}  # the pipe a cell process reports on -> (cell, process)
    try:
        while running or (queue and stop.signum is None):
            while queue and len(running) < jobs and stop.signum is None:
                cell = queue.pop(0)
                reader, writer = context.Pipe(duplex=False)
                process = context.Process(
                    target=_cell_process,
                    name=f"sandbox-sweep-cell-{cell.id}",
                    args=(tasks[cell.index], writer, threads, lock.handle()),
                )
                process.start()
                writer.close()
                pid = process.pid
                assert pid is not None
                running[reader] = (cell, process)
                stop.cells[pid] = False
                started(cell, pid)
            ready: list[Any] = wait(list(running), timeout=1.0)
            for pipe in ready:
                cell, process = running[pipe]
                try:
                    kind, result = pipe.recv()
                except EOFError:  # the process ended without a result
                    process.join()
                    kind, result = "result", _died(plan.cell_dir(cell), process.exitcode, stop)
                if kind == "ready":
                    stop.ready(process.pid)
                    continue
                process.join()
                pipe.close()
                del running[pipe]
                stop.cells.pop(process.pid, None)
                record(cell, result)
    finally:
        for _, process in running.values():  # only after an error here
            kill_cell(process.pid)
            process.join()


def failed(plan: Plan) -> list[Cell]:
    return [c for c in plan.cells if c.status in ("failed", "invalid")]
