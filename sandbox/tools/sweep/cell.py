"""One cell: run into its folder (resumed from its latest checkpoint, or sampling from another cell's training),
with failures written down instead of raised; and a launcher's job, a list of cells."""

from __future__ import annotations

import contextlib
import io
import itertools
import shutil
import signal
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from sandbox.engine.rundir import RunDir, read_json, write_json, write_text
from sandbox.errors import Interrupted, SandboxError
from sandbox.recipe import Recipe, load_recipe
from sandbox.registry import Registry, use_registry
from sandbox.tools.sweep.axes import override
from sandbox.tools.sweep.plan import SAMPLING_ONLY, Cell, Plan
from sandbox.tools.sweep.signals import handling, stop_cell

RESUME_KEYS = ("run.device", "run.workers", "run.threads")  # taken from this sweep's cell when resuming one


def move_aside(path: Path) -> Path:
    """Rename an unfinished cell folder (or an unreadable file in one) to ``<name>.incomplete-<n>``; nothing is
    deleted."""
    for n in itertools.count(1):
        target = path.with_name(f"{path.name}.incomplete-{n}")
        if not target.exists():
            path.rename(target)
            return target
    raise AssertionError("unreachable")


def open_cell(folder: Path, recipe: Recipe, notes: list[str]) -> tuple[Recipe, dict[str, Any] | None]:
    """The recipe and checkpoint state to run a cell with.

    An unfinished folder resumes in place from its latest good checkpoint
    (:func:`sandbox.engine.resume.resume_recipe`, with this sweep's ``run.device``,
    ``run.workers`` and ``run.threads``); one with no usable checkpoint is
    moved aside and the cell starts afresh (state None). An unreadable
    ``summary.json`` and an earlier ``error.json`` are moved aside first.
    ``notes`` gets what was done, and the warnings (a checkpoint skipped).
    """
    if not folder.exists():
        return recipe, None
    from sandbox.engine.resume import resume_recipe

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = RunDir(folder)
        if run.summary.exists() and not isinstance(read_json(run.summary), dict):
            notes.append(f"unreadable {run.SUMMARY} moved aside to {move_aside(run.summary).name}")
        try:
            resumed, state = resume_recipe(
                folder, [override(key, getattr(recipe.run, key.partition(".")[2])) for key in RESUME_KEYS]
            )
        except SandboxError as exc:
            state, reason = None, str(exc)
        else:
            reason = "it has no checkpoint"
    notes[:0] = [f"warning: {w.message}" for w in caught]
    if state is not None:
        if run.error.exists():
            notes.append(f"{run.ERROR} of an earlier attempt moved aside to {move_aside(run.error).name}")
        return resumed, state
    notes.append(f"unfinished folder moved aside to {move_aside(folder).name} ({reason}); starting afresh")
    return recipe, None


def sample_cell(recipe: Recipe, trained_in: Path, folder: Path, log: Console) -> None:
    """A cell that differs from an earlier one only in :data:`SAMPLING_ONLY` sections: sample from that cell's
    EMA weights with this cell's sampler and evaluation settings (:func:`sandbox.engine.sample.sample_run`, into the
    training cell's ``samples/``), and write this cell's ``summary.json`` from the training cell's figures and
    the new samples', with ``trained_in`` naming where the weights came from."""
    from sandbox.engine.sample import sample_run

    training, run = RunDir(trained_in), RunDir(folder)
    trained = read_json(training.summary)
    if not isinstance(trained, dict):
        raise SandboxError(f"its training cell {trained_in.name} did not finish; see {trained_in}")
    data, own = recipe.to_dict(), read_yaml_keys(training.recipe)
    sections = [override(section, data[section]) for section in SAMPLING_ONLY if section in data]
    sections += [f"~{section}" for section in SAMPLING_ONLY if section not in data and section in own]
    out = sample_run(trained_in, sections, console=log)
    sampled = read_json(RunDir(out).summary) or {}
    name = recipe.components["sampler"][0]
    provider = recipe.registry.get("sampler", name) if recipe.registry is not None else None
    folder.mkdir(parents=True, exist_ok=True)
    if training.metrics.exists():  # the validation curve of the shared training, for the plot
        shutil.copyfile(training.metrics, run.metrics)
    write_text(run.recipe, recipe.to_yaml())
    components = dict(trained.get("components", {}))
    components["sampler"] = {
        "name": name,
        "plugin": provider.plugin if provider else None,
        "provider": provider.provider if provider else None,
        "params": sampled.get("sampler", {}).get("params", {}),
    }
    write_json(
        run.summary,
        {
            **trained,
            "name": recipe.name,
            "run_dir": str(folder),
            "trained_in": str(trained_in),
            "components": components,
            "sampling": {
                "sampler": name,
                **({"guidance": sampled["guidance"]} if sampled.get("guidance") else {}),
                "num_samples": sampled.get("num_samples"),
                "nfe_per_sample": sampled.get("nfe_per_sample"),
                "seconds": sampled.get("seconds"),
            },
            "sample_quality": sampled.get("sample_quality", {}),
            "sample_health": sampled.get("sample_health", {}),
            "outputs": {"recipe": run.RECIPE, "samples": str(out)},
        },
    )


def read_yaml_keys(path: Path) -> set[str]:
    """The top-level keys of a recipe file (none when it cannot be read)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return set()
    return set(data) if isinstance(data, dict) else set()


def _stopped(folder: Path, signum: int) -> str:
    status = read_json(RunDir(folder).status) if folder.is_dir() else None
    if isinstance(status, dict) and status.get("status") == "interrupted":
        return f"stopped at step {status.get('step')} after a checkpoint"
    return f"stopped by {signal.Signals(signum).name} outside training"


def run_cell(task: dict[str, Any], registry: Registry | None = None) -> dict[str, Any]:
    """Run one cell into its folder, resuming an unfinished one (:func:`open_cell`); a failure writes
    ``error.json`` there instead of raising, and SIGINT / SIGTERM during training return ``interrupted``."""
    from sandbox.engine import run as run_module  # imports torch

    folder = Path(task["cell_dir"])
    run = RunDir(folder)
    log = Console(file=io.StringIO(), record=True, width=120, highlight=False)
    start = time.perf_counter()
    notes: list[str] = []
    result: dict[str, Any]
    try:
        with contextlib.ExitStack() as stack:
            if registry is not None:  # also for resume_recipe, which reads the folder's recipe.yaml
                stack.enter_context(use_registry(registry))
            overrides = list(task["overrides"]) + ([f"run.device={task['device']}"] if task.get("device") else [])
            recipe = load_recipe(task["recipe"], overrides, registry=registry)
            state = None
            if task.get("trained_in"):
                sample_cell(recipe, Path(task["trained_in"]), folder, log)
            else:
                recipe, state = open_cell(folder, recipe, notes)
                for note in notes:
                    log.print(note, markup=False)
                run_module.run_recipe(recipe, console=log, run_dir=folder, resume=state is not None, state=state)
        summary = read_json(run.summary) or {}
        result = {"status": "ran", "val_loss": summary.get("train", {}).get("final_val_loss_ema")}
        if state is not None:
            result["note"] = f"resumed from step {state['step']}"
        elif task.get("trained_in"):
            result["note"] = f"sampled from the training of cell {Path(task['trained_in']).name}"
    except Interrupted as exc:
        result = {"status": "interrupted", "signal": exc.signum, "note": _stopped(folder, exc.signum)}
    except Exception as exc:
        message = str(exc) if isinstance(exc, SandboxError) else f"{type(exc).__name__}: {exc}"
        folder.mkdir(parents=True, exist_ok=True)
        write_json(
            run.error,
            {"message": message, "type": type(exc).__name__, "traceback": traceback.format_exc()},
        )
        result = {"status": "failed", "error": message}
    if folder.exists():
        with run.console.open("a") as handle:  # a resumed cell adds to its earlier sessions'
            handle.write(log.export_text())
    result["seconds"] = time.perf_counter() - start
    result["notes"] = notes
    return result


def run_interruptible(
    task: dict[str, Any], registry: Registry | None = None, on_ready: Callable[[], None] | None = None
) -> dict[str, Any]:
    """:func:`run_cell` with SIGINT / SIGTERM stopping it: during training after the step and a checkpoint,
    elsewhere at once; either way the result is ``interrupted``. ``on_ready`` is called once the handlers are in."""
    try:
        with handling(stop_cell):
            if on_ready is not None:
                on_ready()
            return run_cell(task, registry)
    except Interrupted as exc:
        return {"status": "interrupted", "signal": exc.signum, "note": _stopped(Path(task["cell_dir"]), exc.signum)}


def cell_task(plan: Plan, cell: Cell, device: str | None = None) -> dict[str, Any]:
    """What a cell's process or job needs to run it (:func:`run_cell`): plain strings, picklable and JSON-able."""
    task: dict[str, Any] = {
        "recipe": str(plan.recipe_path),
        "overrides": plan.overrides + cell.overrides,
        "cell_dir": str(plan.cell_dir(cell)),
        "device": device,
    }
    if cell.trained_by is not None:
        task["trained_in"] = str(plan.cell_dir(plan.cells[cell.trained_by]))
    return task


def run_job(tasks: list[dict[str, Any]], stop: Callable[[], bool] = lambda: False) -> list[dict[str, Any]]:
    """A launcher's job: its cells in order (a cell that trains, then those sampling from it), each resumed from
    its folder (:func:`run_interruptible`); a finished cell is skipped, so a requeued job goes on where it
    stopped. An interrupted cell, or ``stop()`` turning true, ends the job.

    The sweep hands it to :meth:`sandbox.protocols.Launcher.submit` (it is a
    :data:`sandbox.protocols.RunJob`), which pickles it by reference: keep it a
    module-level function."""
    results: list[dict[str, Any]] = []
    for task in tasks:
        if stop():
            break
        if isinstance(read_json(RunDir(task["cell_dir"]).summary), dict):
            results.append({"status": "done"})
            continue
        results.append(run_interruptible(task))
        if results[-1]["status"] == "interrupted":
            break
    return results
