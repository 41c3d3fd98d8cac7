"""A sweep's plan: every cell expanded from the axes and seeds, validated, identified, and its state read from its
folder; nothing runs and nothing is written."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from sandbox.engine.rundir import RunDir, SweepDir, read_json
from sandbox.errors import RecipeError, SandboxError
from sandbox.recipe import Recipe, _load_file, load_recipe
from sandbox.registry import Registry
from sandbox.sections import RunConfig
from sandbox.tools.sweep.axes import Axis, matrix_axes, merge_axes, override

# fmt: off
NOT_IDENTITY = ("name", "run.output", "run.workers", "run.threads", "run.loggers", "launcher")  # no effect on results
SAMPLING_ONLY = ("sampler", "eval", "guidance")  # change only sampling: cells differing there share a training
# fmt: on


@dataclass
class Cell:
    """One run of the sweep: base overrides, one value per axis and a seed."""

    # fmt: off
    index: int
    assignment: dict[str, str]          # axis key -> value label
    overrides: list[str]                # dot-list overrides of the axes and the seed
    seed: int
    id: str
    recipe: Recipe | None = None        # None when the cell is invalid
    error: str | None = None            # the validation message of an invalid cell
    status: str = "to run"              # done, to run, to resume, to rerun, invalid; running, ran, failed, interrupted
    duplicate_of: int | None = None     # index of an earlier cell that resolves to the same recipe
    trained_by: int | None = None       # index of an earlier cell with the same training: only sample from it
    resume_step: int | None = None      # "to resume": the step of the folder's newest checkpoint
    pid: int | None = None              # the process that ran it
    seconds: float | None = None
    val_loss: float | None = None
    note: str | None = None             # how it ended or resumed: "resumed from step 200", "stopped at step 80 ..."
    # fmt: on

    @property
    def group(self) -> tuple[str, ...]:
        return tuple(self.assignment.values())


@dataclass
class Plan:
    """A sweep: its recipe, the overrides every cell shares, the axes, seeds per cell, its folder and its cells."""

    recipe_path: Path
    overrides: list[str]
    axes: list[Axis]
    seeds: int
    sweep_dir: Path
    cells: list[Cell] = field(default_factory=list)
    interrupted: int | None = None  # the signal that stopped run_sweep

    def cell_dir(self, cell: Cell) -> Path:
        return SweepDir(self.sweep_dir).cell(cell.id)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for cell in self.cells:
            out[cell.status] = out.get(cell.status, 0) + 1
        return out


def cell_id(recipe: Recipe, without: tuple[str, ...] = ()) -> str:
    """Twelve hex digits of the SHA-256 of the resolved recipe, without :data:`NOT_IDENTITY` (and ``without``)."""
    data = copy.deepcopy(recipe.to_dict())
    for dotted in (*NOT_IDENTITY, *without):
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node.get(part, {})
        node.pop(last, None)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def training_id(recipe: Recipe) -> str:
    """The identity of a cell's training: its recipe without the keys that only change sampling
    (:data:`SAMPLING_ONLY`), so cells that differ only there share one training run."""
    return cell_id(recipe, SAMPLING_ONLY)


def _invalid_id(overrides: list[str]) -> str:
    return "invalid-" + hashlib.sha256(json.dumps(overrides).encode()).hexdigest()[:4]


def _validate(path: Path, overrides: list[str], registry: Registry | None) -> tuple[Recipe | None, str | None]:
    try:
        return load_recipe(path, overrides, registry=registry), None
    except SandboxError as exc:
        return None, str(exc)
    except Exception as exc:  # a plugin's params raising in __post_init__, say
        return None, f"{type(exc).__name__}: {exc}"


def plan_sweep(
    recipe_path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    axes: list[Axis] | tuple[Axis, ...] = (),
    seeds: int = 1,
    out: str | Path | None = None,
    registry: Registry | None = None,
) -> Plan:
    """Expand and validate every cell; nothing runs and nothing is written."""
    path = Path(recipe_path).resolve()
    if seeds < 1:
        raise RecipeError(f"--seeds {seeds}: expected 1 or more")
    all_axes = merge_axes(matrix_axes(_load_file(path).get("matrix")), list(axes))
    overrides = list(overrides)
    cells: list[Cell] = []
    seen: dict[str, int] = {}
    trainers: dict[str, int] = {}  # training identity -> the first cell with it, which trains
    combos = itertools.product(*(list(zip(a.labels, a.values, strict=True)) for a in all_axes))
    for combo in combos:
        assignment = {axis.key: label for axis, (label, _) in zip(all_axes, combo, strict=True)}
        axis_overrides = [override(axis.key, value) for axis, (_, value) in zip(all_axes, combo, strict=True)]
        first, error = _validate(path, overrides + axis_overrides, registry)
        base_seed = first.run.seed if first is not None else 0
        for i in range(seeds):
            seed_overrides = [*axis_overrides, f"run.seed={base_seed + i}"]
            recipe, message = (
                (first, error) if i == 0 or first is None else _validate(path, overrides + seed_overrides, registry)
            )
            cell = Cell(
                index=len(cells),
                assignment=assignment,
                overrides=seed_overrides,
                seed=base_seed + i,
                id=cell_id(recipe) if recipe is not None else _invalid_id(overrides + seed_overrides),
                recipe=recipe,
                error=message,
            )
            if recipe is None:
                cell.status = "invalid"
            elif cell.id in seen:
                cell.duplicate_of = seen[cell.id]
            else:
                seen[cell.id] = cell.index
                trained = trainers.setdefault(training_id(recipe), cell.index)
                cell.trained_by = trained if trained != cell.index else None
            cells.append(cell)
    valid = [c.recipe for c in cells if c.recipe is not None]
    output = valid[0].run.output if valid else RunConfig().output
    sweep_dir = Path(out) if out is not None else Path(output) / "sweeps" / path.stem
    plan = Plan(recipe_path=path, overrides=overrides, axes=all_axes, seeds=seeds, sweep_dir=sweep_dir, cells=cells)
    refresh(plan)
    return plan


def cell_state(folder: Path, steps: int) -> tuple[str, int | None]:
    """A cell folder's state: done (its ``summary.json`` reads), to run (no folder), to resume from the step
    of its newest checkpoint, or to rerun (no checkpoint: it is moved aside). A torn ``summary.json`` warns."""
    run = RunDir(folder)
    if run.summary.exists() and isinstance(read_json(run.summary), dict):
        return "done", None
    if not folder.exists():
        return "to run", None
    step = newest_checkpoint_step(run.checkpoints, steps)
    return ("to rerun", None) if step is None else ("to resume", step)


def newest_checkpoint_step(folder: Path, final_step: int) -> int | None:
    """The step of the checkpoint a resume tries first, read from its name (the resume itself checks that it
    loads, and falls back to an older one); ``final.pt`` is ``final_step``."""
    if not folder.is_dir():
        return None
    from sandbox.engine import checkpoint  # imports torch

    for path in checkpoint.candidates(folder):
        step = checkpoint.step_of(path)
        return step if step is not None else final_step
    return None


def refresh(plan: Plan) -> None:
    """Set each valid cell's status from its folder (:func:`cell_state`)."""
    for cell in plan.cells:
        if cell.recipe is not None:
            cell.status, cell.resume_step = cell_state(plan.cell_dir(cell), cell.recipe.train.steps)


def plan_record(plan: Plan, state: str = "planned", signum: int | None = None) -> dict[str, Any]:
    """What ``sweep.json`` holds: the plan, readable by ``sandbox summary``, and the sweep's state (running,
    finished or interrupted), process and the PID of each cell's process."""
    return {
        "state": state,
        "signal": signal.Signals(signum).name if signum is not None else None,
        "pid": os.getpid(),
        "recipe": str(plan.recipe_path),
        "overrides": plan.overrides,
        "seeds": plan.seeds,
        "axes": [{"key": a.key, "labels": a.labels, "values": a.values, "source": a.source} for a in plan.axes],
        "updated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cells": [
            {
                "id": c.id,
                "group": c.assignment,
                "seed": c.seed,
                "overrides": c.overrides,
                "status": c.status,
                "resume_step": c.resume_step,
                "error": c.error,
                "note": c.note,
                "seconds": c.seconds,
                "pid": c.pid,
            }
            for c in plan.cells
        ],
    }


def assignment_text(cell: Cell) -> str:
    return " ".join(f"{k}={v}" for k, v in cell.assignment.items()) or "(recipe)"


def plan_table(plan: Plan) -> Table:
    """The expanded plan: cell id, one column per axis, seed and status."""
    counts = ", ".join(f"{n} {status}" for status, n in plan.counts().items())
    table = Table(
        title=f"Sweep of {plan.recipe_path.name}: {len(plan.cells)} cells ({counts}) in {plan.sweep_dir}",
        title_justify="left",
        caption=f"overrides: {' '.join(plan.overrides) or 'none'}",
        caption_justify="left",
    )
    for column in ["#", "cell", *(a.key for a in plan.axes), "seed", "status"]:
        table.add_column(column, overflow="fold")
    style = {"done": "green", "invalid": "red", "to rerun": "yellow", "to resume": "yellow"}
    for cell in plan.cells:
        status = cell.status if cell.error is None else f"invalid: {cell.error}"
        if cell.status == "to resume":
            status = f"resume from step {cell.resume_step}"
        if cell.duplicate_of is not None:
            status += f" (same recipe as #{cell.duplicate_of})"
        elif cell.trained_by is not None:
            status += f" (samples from #{cell.trained_by}'s training)"
        table.add_row(
            str(cell.index),
            cell.id,
            *cell.assignment.values(),
            str(cell.seed),
            f"[{style.get(cell.status, 'default')}]{status}[/]",
        )
    return table
