"""``sandbox sweep``: the cartesian product of a recipe's ``matrix:`` axes, run cell by cell, resumable.

A recipe declares its axes in a top-level ``matrix:`` mapping from a recipe
key to a list of values; the command line adds or replaces axes with
``--axis key=v1,v2``. An axis may vary any key, a component parameter
(``denoiser.channels: [32, 64]``), or a whole section, given as mappings::

    matrix:
      denoiser:                       # whole-section choices, labelled by their name
        - {name: unet}
        - {name: resnet, channels: 32, num_blocks: 4, groups: 8}
      schedule.name: [linear, cosine]

A value is applied as a recipe layer, so a section whose ``name`` changes
starts afresh (``{name: resnet, ...}`` gets the ResNet's defaults), and one
with the same name is merged into the recipe's section.

A cell is the recipe plus the command line's overrides, one value per axis
and ``run.seed = <recipe seed> + i`` for ``i < seeds``. Every cell is
validated before anything runs. Its identity is a hash of its fully resolved
recipe (without the keys that do not change results, :data:`NOT_IDENTITY`),
and its folder is ``<sweep>/cells/<id>/``. A cell is done when that folder
holds ``summary.json``, so running the same sweep again only runs what is
missing, and a changed recipe gets new cells instead of stale results.
"""

from __future__ import annotations

import copy
import hashlib
import io
import itertools
import json
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console
from rich.table import Table

from sandbox.errors import RecipeError, SandboxError
from sandbox.recipe import Recipe, RunConfig, _load_file, load_recipe
from sandbox.registry import Registry

NOT_IDENTITY = ("name", "run.output", "run.workers", "run.threads")  # resolved keys that do not change results
SWEEP_FILE = "sweep.json"


@dataclass
class Axis:
    """One axis of the matrix: a recipe key and the values it takes."""

    key: str
    values: list[Any]
    labels: list[str]
    source: str = "recipe"            # "recipe" or "command line"


@dataclass
class Cell:
    """One run of the sweep: base overrides, one value per axis and a seed."""

    index: int
    assignment: dict[str, str]        # axis key -> value label
    overrides: list[str]              # dot-list overrides of the axes and the seed
    seed: int
    id: str
    recipe: Optional[Recipe] = None   # None when the cell is invalid
    error: Optional[str] = None       # the validation message of an invalid cell
    status: str = "to run"            # done, to run, to rerun, invalid; after running: ran, failed
    duplicate_of: Optional[int] = None  # index of an earlier cell that resolves to the same recipe
    seconds: Optional[float] = None
    val_loss: Optional[float] = None

    @property
    def group(self) -> tuple[str, ...]:
        return tuple(self.assignment.values())


@dataclass
class Plan:
    recipe_path: Path
    overrides: list[str]
    axes: list[Axis]
    seeds: int
    sweep_dir: Path
    cells: list[Cell] = field(default_factory=list)

    def cell_dir(self, cell: Cell) -> Path:
        return self.sweep_dir / "cells" / cell.id

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for cell in self.cells:
            out[cell.status] = out.get(cell.status, 0) + 1
        return out


# --- axes -------------------------------------------------------------------------------------------------

def split_list(text: str) -> list[str]:
    """Split on the commas outside brackets, braces and quotes: ``[1,2],{a: 1, b: 2},x``."""
    parts, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced '{char}'")
        elif char == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    if depth or quote:
        raise ValueError("unbalanced brackets or quotes")
    parts.append(text[start:].strip())
    return parts


def parse_value(text: str) -> Any:
    """A value as a dot-list override reads it: ints, floats, bools, null, lists, mappings, else a string."""
    try:
        parsed = OmegaConf.to_container(OmegaConf.from_dotlist([f"v={text}"]))
    except OmegaConfBaseException as exc:
        raise ValueError(str(exc).splitlines()[0]) from exc
    assert isinstance(parsed, dict)
    return parsed["v"]


def parse_axis(text: str) -> Axis:
    """``--axis key=v1,v2,...`` (values parsed like dot-list values)."""
    example = "expected key=v1,v2,..., for example --axis schedule.name=linear,cosine"
    key, sep, values = text.partition("=")
    key = key.strip()
    if not sep or not key or not values.strip():
        raise RecipeError(f"axis '{text}': {example}")
    try:
        items = split_list(values)
        if "" in items:
            raise ValueError("an empty value")
        parsed = [parse_value(item) for item in items]
    except ValueError as exc:
        raise RecipeError(f"axis '{text}': {exc}; {example}") from exc
    return _axis(key, parsed, "command line")


def _axis(key: str, values: list[Any], source: str) -> Axis:
    if not values:
        raise RecipeError(f"matrix axis '{key}': no values; expected a list of one or more values")
    return Axis(key=key, values=values, labels=value_labels(values), source=source)


def matrix_axes(matrix: Any, prefix: str = "") -> list[Axis]:
    """The axes of a ``matrix:`` mapping; nested mappings are read as dotted keys."""
    if matrix is None:
        return []
    if not isinstance(matrix, dict):
        raise RecipeError(f"recipe key 'matrix{'.' + prefix.rstrip('.') if prefix else ''}': {matrix!r}; "
                          "expected a mapping of recipe keys to lists of values")
    axes = []
    for key, values in matrix.items():
        dotted = f"{prefix}{key}"
        if isinstance(values, dict):
            axes.extend(matrix_axes(values, f"{dotted}."))
        elif isinstance(values, list):
            axes.append(_axis(dotted, values, "recipe"))
        else:
            raise RecipeError(f"recipe key 'matrix.{dotted}': {values!r}; expected a list of values")
    return axes


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def merge_axes(recipe_axes: list[Axis], cli_axes: list[Axis]) -> list[Axis]:
    """Command-line axes replace recipe axes on the same key (or a section containing it, or inside it)."""
    out = list(recipe_axes)
    for axis in cli_axes:
        clash = [i for i, old in enumerate(out) if _overlaps(old.key, axis.key)]
        if clash:
            out[clash[0]] = axis
            out = [old for i, old in enumerate(out) if i not in clash[1:]]
        else:
            out.append(axis)
    return out


def _compact(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return ",".join(f"{k}={_compact(v)}" for k, v in value.items())
    return json.dumps(value)


def value_labels(values: list[Any]) -> list[str]:
    """Readable labels: a section's ``name`` where that tells the values apart, else the value itself."""
    labels = [v["name"] if isinstance(v, dict) and isinstance(v.get("name"), str) else _compact(v) for v in values]
    repeated = {label for label in labels if labels.count(label) > 1}
    for i, label in enumerate(labels):
        if label in repeated and isinstance(values[i], dict):
            rest = {k: v for k, v in values[i].items() if k != "name"}
            labels[i] = f"{label}({_compact(rest)})" if "name" in values[i] else _compact(values[i])
    if len(set(labels)) < len(labels):
        raise RecipeError(f"matrix axis: the values {labels} repeat; give each value once")
    return labels


def override(key: str, value: Any) -> str:
    """A dot-list override that reads back as ``value`` (JSON is valid YAML)."""
    return f"{key}={json.dumps(value)}"


# --- plan -------------------------------------------------------------------------------------------------

def cell_id(recipe: Recipe) -> str:
    """Twelve hex digits of the SHA-256 of the resolved recipe, without :data:`NOT_IDENTITY`."""
    data = copy.deepcopy(recipe.to_dict())
    for dotted in NOT_IDENTITY:
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node.get(part, {})
        node.pop(last, None)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _invalid_id(overrides: list[str]) -> str:
    return "invalid-" + hashlib.sha256(json.dumps(overrides).encode()).hexdigest()[:4]


def _validate(path: Path, overrides: list[str], registry: Registry | None) -> tuple[Recipe | None, str | None]:
    try:
        return load_recipe(path, overrides, registry=registry), None
    except SandboxError as exc:
        return None, str(exc)
    except Exception as exc:  # a plugin's params raising in __post_init__, say
        return None, f"{type(exc).__name__}: {exc}"


def plan_sweep(recipe_path: str | Path, overrides: list[str] | tuple[str, ...] = (), *,
               axes: list[Axis] | tuple[Axis, ...] = (), seeds: int = 1, out: str | Path | None = None,
               registry: Registry | None = None) -> Plan:
    """Expand and validate every cell; nothing runs and nothing is written."""
    path = Path(recipe_path).resolve()
    if seeds < 1:
        raise RecipeError(f"--seeds {seeds}: expected 1 or more")
    all_axes = merge_axes(matrix_axes(_load_file(path).get("matrix")), list(axes))
    overrides = list(overrides)
    cells: list[Cell] = []
    seen: dict[str, int] = {}
    combos = itertools.product(*(list(zip(a.labels, a.values)) for a in all_axes))
    for combo in combos:
        assignment = {axis.key: label for axis, (label, _) in zip(all_axes, combo)}
        axis_overrides = [override(axis.key, value) for axis, (_, value) in zip(all_axes, combo)]
        first, error = _validate(path, overrides + axis_overrides, registry)
        base_seed = first.run.seed if first is not None else 0
        for i in range(seeds):
            seed_overrides = axis_overrides + [f"run.seed={base_seed + i}"]
            recipe, message = (first, error) if i == 0 or first is None else \
                _validate(path, overrides + seed_overrides, registry)
            cell = Cell(index=len(cells), assignment=assignment, overrides=seed_overrides, seed=base_seed + i,
                        id=cell_id(recipe) if recipe is not None else _invalid_id(overrides + seed_overrides),
                        recipe=recipe, error=message)
            if recipe is None:
                cell.status = "invalid"
            elif cell.id in seen:
                cell.duplicate_of = seen[cell.id]
            else:
                seen[cell.id] = cell.index
            cells.append(cell)
    valid = [c.recipe for c in cells if c.recipe is not None]
    output = valid[0].run.output if valid else RunConfig().output
    sweep_dir = Path(out) if out is not None else Path(output) / "sweeps" / path.stem
    plan = Plan(recipe_path=path, overrides=overrides, axes=all_axes, seeds=seeds, sweep_dir=sweep_dir, cells=cells)
    for cell in cells:
        if cell.recipe is not None:
            folder = plan.cell_dir(cell)
            cell.status = "done" if (folder / "summary.json").exists() else "to rerun" if folder.exists() else "to run"
    return plan


def plan_record(plan: Plan) -> dict[str, Any]:
    """What ``sweep.json`` holds: the plan, readable by ``sandbox summary``."""
    return {
        "recipe": str(plan.recipe_path),
        "overrides": plan.overrides,
        "seeds": plan.seeds,
        "axes": [{"key": a.key, "labels": a.labels, "values": a.values, "source": a.source} for a in plan.axes],
        "updated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cells": [{"id": c.id, "group": c.assignment, "seed": c.seed, "overrides": c.overrides, "status": c.status,
                   "error": c.error, "seconds": c.seconds} for c in plan.cells],
    }


def _assignment_text(cell: Cell) -> str:
    return " ".join(f"{k}={v}" for k, v in cell.assignment.items()) or "(recipe)"


def plan_table(plan: Plan) -> Table:
    """The expanded plan: cell id, one column per axis, seed and status."""
    counts = ", ".join(f"{n} {status}" for status, n in plan.counts().items())
    table = Table(title=f"Sweep of {plan.recipe_path.name}: {len(plan.cells)} cells ({counts}) in {plan.sweep_dir}",
                  title_justify="left", caption=f"overrides: {' '.join(plan.overrides) or 'none'}",
                  caption_justify="left")
    for column in ["#", "cell", *(a.key for a in plan.axes), "seed", "status"]:
        table.add_column(column, overflow="fold")
    style = {"done": "green", "invalid": "red", "to rerun": "yellow"}
    for cell in plan.cells:
        status = cell.status if cell.error is None else f"invalid: {cell.error}"
        if cell.duplicate_of is not None:
            status += f" (same recipe as #{cell.duplicate_of})"
        table.add_row(str(cell.index), cell.id, *cell.assignment.values(), str(cell.seed),
                      f"[{style.get(cell.status, 'default')}]{status}[/]")
    return table


# --- running ----------------------------------------------------------------------------------------------

def gpu_for(index: int, device: str, n_gpus: int) -> str | None:
    """The ``run.device`` for cell ``index`` on a machine with ``n_gpus`` CUDA GPUs (None: leave it)."""
    if n_gpus > 1 and device in ("auto", "cuda"):
        return f"cuda:{index % n_gpus}"
    return None


def move_aside(folder: Path) -> Path:
    """Rename an unfinished cell folder to ``<id>.incomplete-<n>``; nothing is deleted."""
    for n in itertools.count(1):
        target = folder.with_name(f"{folder.name}.incomplete-{n}")
        if not target.exists():
            folder.rename(target)
            return target
    raise AssertionError("unreachable")


def run_cell(task: dict[str, Any], registry: Registry | None = None) -> dict[str, Any]:
    """Run one cell into its folder; a failure writes ``error.json`` there instead of raising."""
    from sandbox import run as run_module  # imports torch
    from sandbox.rundir import write_json

    folder = Path(task["cell_dir"])
    log = Console(file=io.StringIO(), record=True, width=120, highlight=False)
    start = time.perf_counter()
    try:
        overrides = list(task["overrides"]) + ([f"run.device={task['device']}"] if task.get("device") else [])
        recipe = load_recipe(task["recipe"], overrides, registry=registry)
        run_module.run_recipe(recipe, console=log, run_dir=folder)
        summary = json.loads((folder / "summary.json").read_text())
        result: dict[str, Any] = {"status": "ran", "val_loss": summary["train"].get("final_val_loss_ema")}
    except Exception as exc:
        message = str(exc) if isinstance(exc, SandboxError) else f"{type(exc).__name__}: {exc}"
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "error.json", {"message": message, "type": type(exc).__name__,
                                           "traceback": traceback.format_exc()})
        result = {"status": "failed", "error": message}
    if folder.exists():
        (folder / "console.txt").write_text(log.export_text())
    result["seconds"] = time.perf_counter() - start
    return result


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _cell_line(cell: Cell, done: int, total: int) -> str:
    style = {"ran": "green", "done": "green", "failed": "red", "invalid": "red"}.get(cell.status, "default")
    parts = [f"[{done}/{total}]", cell.id, _assignment_text(cell), f"seed={cell.seed}",
             f"[{style}]{cell.status}[/]"]
    if cell.val_loss is not None:
        parts.append(f"val loss (EMA) {cell.val_loss:.4g}")
    if cell.seconds is not None:
        parts.append(f"{cell.seconds:.1f} s")
    if cell.error:
        parts.append(f"[red]{cell.error}[/]")
    return "  ".join(parts)


def run_sweep(plan: Plan, *, jobs: int = 1, console: Console | None = None,
              registry: Registry | None = None) -> Plan:
    """Run every cell not yet done, ``jobs`` at a time; returns the plan with each cell's final status.

    With ``jobs > 1`` each cell runs in its own spawned process (the installed
    plugins' registry; ``registry`` is used only in this process) with
    ``cores // jobs`` torch threads; on a machine with several CUDA GPUs,
    cell ``i`` of the ones to run gets ``cuda:{i % n_gpus}`` when its device is
    ``auto`` or ``cuda``.
    """
    from sandbox.console import console as default_console
    from sandbox.rundir import write_json

    console = console or default_console
    if jobs < 1:
        raise RecipeError(f"--jobs {jobs}: expected 1 or more")
    plan.sweep_dir.mkdir(parents=True, exist_ok=True)
    write_json(plan.sweep_dir / SWEEP_FILE, plan_record(plan))
    total = len(plan.cells)
    to_run = [c for c in plan.cells if c.status in ("to run", "to rerun") and c.duplicate_of is None]
    counts = ", ".join(f"{n} {status}" for status, n in plan.counts().items())
    console.print(f"sweep [bold]{plan.sweep_dir}[/]: {total} cells ({counts}), {jobs} at a time")
    finished = 0
    for cell in plan.cells:
        if cell.status in ("invalid", "done"):
            finished += 1
            console.print(_cell_line(cell, finished, total))

    n_gpus = 0
    if jobs > 1:
        import torch

        n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    tasks = {}
    for i, cell in enumerate(to_run):
        folder = plan.cell_dir(cell)
        if folder.exists():
            console.print(f"{cell.id}: unfinished folder moved aside to {move_aside(folder).name}")
        device = gpu_for(i, cell.recipe.run.device, n_gpus) if cell.recipe is not None else None
        tasks[cell.index] = {"recipe": str(plan.recipe_path), "overrides": plan.overrides + cell.overrides,
                             "cell_dir": str(folder), "device": device}

    def record(cell: Cell, result: dict[str, Any]) -> None:
        nonlocal finished
        cell.status, cell.seconds = result["status"], result.get("seconds")
        cell.val_loss, cell.error = result.get("val_loss"), result.get("error")
        finished += 1
        console.print(_cell_line(cell, finished, total))

    if jobs == 1:
        for cell in to_run:
            with console.status(f"running cell {cell.id} ({_assignment_text(cell)}, seed {cell.seed})"):
                record(cell, run_cell(tasks[cell.index], registry))
    elif to_run:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        threads = max(1, _cores() // jobs)
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker, initargs=(threads,)) as pool:
            futures = {pool.submit(run_cell, tasks[cell.index]): cell for cell in to_run}
            for future in as_completed(futures):
                cell = futures[future]
                try:
                    result = future.result()
                except Exception as exc:  # the worker process died
                    message = f"{type(exc).__name__}: {exc}"
                    folder = plan.cell_dir(cell)
                    folder.mkdir(parents=True, exist_ok=True)
                    write_json(folder / "error.json", {"message": message, "type": type(exc).__name__,
                                                       "traceback": traceback.format_exc()})
                    result = {"status": "failed", "error": message}
                record(cell, result)
    for cell in plan.cells:  # a duplicate shares its twin's folder and outcome
        if cell.duplicate_of is not None and cell.recipe is not None:
            twin = plan.cells[cell.duplicate_of]
            cell.status, cell.error, cell.val_loss = twin.status, twin.error, twin.val_loss
    write_json(plan.sweep_dir / SWEEP_FILE, plan_record(plan))
    return plan


def failed(plan: Plan) -> list[Cell]:
    return [c for c in plan.cells if c.status in ("failed", "invalid")]

