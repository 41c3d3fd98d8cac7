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
holds a readable ``summary.json``, so running the same sweep again only runs
what is missing, and a changed recipe gets new cells instead of stale results.
An unfinished cell resumes in its folder from its latest good checkpoint
(:func:`sandbox.engine.resume.resume_recipe`); one without a checkpoint is moved
aside and run again.

One sweep process works on a sweep folder at a time (:class:`SweepLock`).
SIGINT or SIGTERM stops a sweep: no new cell starts, each running cell gets
the signal (it finishes its step, writes a checkpoint and stops), and
running the same command again resumes them; a second SIGINT kills the
cells at once.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import itertools
import json
import os
import shutil
import signal
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sandbox.engine.rundir import read_json, write_text
from sandbox.errors import RecipeError, SandboxError
from sandbox.recipe import Recipe, RunConfig, _load_file, load_recipe
from sandbox.registry import Registry, use_registry

# fmt: off
NOT_IDENTITY = ("name", "run.output", "run.workers", "run.threads", "run.loggers", "launcher")  # no effect on results
SAMPLING_ONLY = ("sampler", "eval")  # sections that change only sampling: cells differing there share a training
SWEEP_FILE = "sweep.json"
LOCK_FILE = ".lock"                                          # flock'ed by the sweep and its cell processes
RESUME_KEYS = ("run.device", "run.workers", "run.threads")  # taken from this sweep's cell when resuming one
# fmt: on


@dataclass
class Axis:
    """One axis of the matrix: a recipe key and the values it takes."""

    # fmt: off
    key: str
    values: list[Any]
    labels: list[str]
    source: str = "recipe"              # "recipe" or "command line"
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
    recipe_path: Path
    overrides: list[str]
    axes: list[Axis]
    seeds: int
    sweep_dir: Path
    cells: list[Cell] = field(default_factory=list)
    interrupted: int | None = None  # the signal that stopped run_sweep

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
        raise RecipeError(
            f"recipe key 'matrix{'.' + prefix.rstrip('.') if prefix else ''}': {matrix!r}; "
            "expected a mapping of recipe keys to lists of values"
        )
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
    summary = folder / "summary.json"
    if summary.exists() and isinstance(read_json(summary), dict):
        return "done", None
    if not folder.exists():
        return "to run", None
    step = newest_checkpoint_step(folder / "checkpoints", steps)
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


def _assignment_text(cell: Cell) -> str:
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


# --- running ----------------------------------------------------------------------------------------------


def gpu_for(index: int, device: str, n_gpus: int) -> str | None:
    """The ``run.device`` for cell ``index`` on a machine with ``n_gpus`` CUDA GPUs (None: leave it)."""
    if n_gpus > 1 and device in ("auto", "cuda"):
        return f"cuda:{index % n_gpus}"
    return None


def move_aside(path: Path) -> Path:
    """Rename an unfinished cell folder (or an unreadable file in one) to ``<name>.incomplete-<n>``; nothing is
    deleted."""
    for n in itertools.count(1):
        target = path.with_name(f"{path.name}.incomplete-{n}")
        if not target.exists():
            path.rename(target)
            return target
    raise AssertionError("unreachable")


# --- one sweep per folder ---------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SweepLock:
    """An exclusive ``fcntl.flock`` on ``<sweep>/.lock``, which holds the sweep's PID.

    The OS releases it when the last process holding it ends, so a crashed
    sweep never leaves it stuck. The sweep's cell processes inherit it
    (:meth:`handle`): a rerun cannot start while cells of a killed sweep are
    still writing their checkpoints.
    """

    def __init__(self, sweep_dir: str | Path):
        self.sweep_dir = Path(sweep_dir)
        self.path = self.sweep_dir / LOCK_FILE
        self.fd: int | None = None

    def __enter__(self) -> SweepLock:
        import fcntl

        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip()
            os.close(fd)
            if not holder.isdigit():
                who = "another sandbox sweep"
            elif _alive(int(holder)):
                who = f"another sandbox sweep, PID {holder} (stop it with kill {holder})"
            else:
                who = f"the cell processes of sandbox sweep PID {holder}, which ended; they stop within a step"
            raise SandboxError(
                f"sweep folder {self.sweep_dir} is in use by {who}; run this command again when it is free"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def handle(self) -> _Inherited:
        """The lock's file descriptor, to pass to a spawned process that should hold the lock until it ends."""
        assert self.fd is not None, "the lock is not held"
        return _Inherited(self.fd)


class _Inherited:
    """A file descriptor handed to a spawned process the way multiprocessing hands over a ``Connection``
    (``reduction.DupFd``): the child shares the open file, and with it the sweep's flock, until it ends."""

    def __init__(self, fd: int):
        self.fd = fd

    def __reduce__(self) -> tuple[Any, ...]:
        from multiprocessing import reduction

        return _rebuild_inherited, (reduction.DupFd(self.fd),)


def _rebuild_inherited(dup: Any) -> _Inherited:
    return _Inherited(dup.detach())


# --- signals ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _handling(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """``handler`` for SIGINT and SIGTERM inside the block (signals reach the main thread only)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def _stop_cell(signum: int, frame: Any) -> None:
    """A signal in a cell outside training stops it at once (training itself finishes its step and checkpoints:
    :class:`sandbox.engine.training.StopRequest` replaces this handler while it runs)."""
    from sandbox.errors import Interrupted

    raise Interrupted(f"{signal.Signals(signum).name} outside training", signum)


def _send(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def _kill(pid: int) -> None:
    """SIGKILL a cell process and its process group (its DataLoader workers)."""
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
    _send(pid, signal.SIGKILL)


class _SweepStop:
    """SIGINT / SIGTERM to the sweep. The first: no new cell starts, and each running cell process gets the signal
    once it has its handlers (it finishes its step, checkpoints and stops). A second SIGINT kills them at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.killed = False
        self.cells: dict[int, bool] = {}  # pid of a running cell process -> ready for a signal

    def __call__(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            for pid, ready in list(self.cells.items()):
                if ready:
                    _send(pid, signum)
        elif signum == signal.SIGINT and not self.killed:
            self.killed = True
            for pid in list(self.cells):
                _kill(pid)

    def ready(self, pid: int) -> None:
        self.cells[pid] = True
        if self.killed:
            _kill(pid)
        elif self.signum is not None:
            _send(pid, self.signum)


def _stop_with_parent() -> None:
    """SIGTERM this cell process once when the sweep dies, even by SIGKILL, so it checkpoints and stops. (Linux's
    ``PR_SET_PDEATHSIG`` would fire again each time a dying multi-threaded sweep hands the child to another of its
    threads, and a later SIGTERM would cut the checkpointed stop short.)"""
    import multiprocessing
    import threading

    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()  # its sentinel reads as ready when the sweep ends
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="sandbox-sweep-watch", daemon=True).start()


# --- cells and the sweep ----------------------------------------------------------------------------------


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
        summary = folder / "summary.json"
        if summary.exists() and not isinstance(read_json(summary), dict):
            notes.append(f"unreadable summary.json moved aside to {move_aside(summary).name}")
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
        if (folder / "error.json").exists():
            notes.append(f"error.json of an earlier attempt moved aside to {move_aside(folder / 'error.json').name}")
        return resumed, state
    notes.append(f"unfinished folder moved aside to {move_aside(folder).name} ({reason}); starting afresh")
    return recipe, None


def sample_cell(recipe: Recipe, trained_in: Path, folder: Path, log: Console) -> None:
    """A cell that differs from an earlier one only in :data:`SAMPLING_ONLY` sections: sample from that cell's
    EMA weights with this cell's sampler and evaluation settings (:func:`sandbox.engine.sample.sample_run`, into the
    training cell's ``samples/``), and write this cell's ``summary.json`` from the training cell's figures and
    the new samples', with ``trained_in`` naming where the weights came from."""
    from sandbox.engine.rundir import write_json
    from sandbox.engine.sample import sample_run

    trained = read_json(trained_in / "summary.json")
    if not isinstance(trained, dict):
        raise SandboxError(f"its training cell {trained_in.name} did not finish; see {trained_in}")
    data = recipe.to_dict()
    out = sample_run(trained_in, [override(section, data[section]) for section in SAMPLING_ONLY], console=log)
    sampled = read_json(out / "summary.json") or {}
    name = recipe.components["sampler"][0]
    provider = recipe.registry.get("sampler", name) if recipe.registry is not None else None
    folder.mkdir(parents=True, exist_ok=True)
    if (trained_in / "metrics.jsonl").exists():  # the validation curve of the shared training, for the plot
        shutil.copyfile(trained_in / "metrics.jsonl", folder / "metrics.jsonl")
    write_text(folder / "recipe.yaml", recipe.to_yaml())
    components = dict(trained.get("components", {}))
    components["sampler"] = {
        "name": name,
        "plugin": provider.plugin if provider else None,
        "provider": provider.provider if provider else None,
        "params": sampled.get("sampler", {}).get("params", {}),
    }
    write_json(
        folder / "summary.json",
        {
            **trained,
            "name": recipe.name,
            "run_dir": str(folder),
            "trained_in": str(trained_in),
            "components": components,
            "sampling": {
                "sampler": name,
                "num_samples": sampled.get("num_samples"),
                "nfe_per_sample": sampled.get("nfe_per_sample"),
                "seconds": sampled.get("seconds"),
            },
            "sample_quality": sampled.get("sample_quality", {}),
            "sample_health": sampled.get("sample_health", {}),
            "outputs": {"recipe": "recipe.yaml", "samples": str(out)},
        },
    )


def _stopped(folder: Path, signum: int) -> str:
    status = read_json(folder / "status.json") if folder.is_dir() else None
    if isinstance(status, dict) and status.get("status") == "interrupted":
        return f"stopped at step {status.get('step')} after a checkpoint"
    return f"stopped by {signal.Signals(signum).name} outside training"


def run_cell(task: dict[str, Any], registry: Registry | None = None) -> dict[str, Any]:
    """Run one cell into its folder, resuming an unfinished one (:func:`open_cell`); a failure writes
    ``error.json`` there instead of raising, and SIGINT / SIGTERM during training return ``interrupted``."""
    from sandbox.engine import run as run_module  # imports torch
    from sandbox.engine.rundir import write_json
    from sandbox.errors import Interrupted

    folder = Path(task["cell_dir"])
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
        summary = read_json(folder / "summary.json") or {}
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
            folder / "error.json",
            {"message": message, "type": type(exc).__name__, "traceback": traceback.format_exc()},
        )
        result = {"status": "failed", "error": message}
    if folder.exists():
        with (folder / "console.txt").open("a") as handle:  # a resumed cell adds to its earlier sessions'
            handle.write(log.export_text())
    result["seconds"] = time.perf_counter() - start
    result["notes"] = notes
    return result


def run_interruptible(
    task: dict[str, Any], registry: Registry | None = None, on_ready: Callable[[], None] | None = None
) -> dict[str, Any]:
    """:func:`run_cell` with SIGINT / SIGTERM stopping it: during training after the step and a checkpoint,
    elsewhere at once; either way the result is ``interrupted``. ``on_ready`` is called once the handlers are in."""
    from sandbox.errors import Interrupted

    try:
        with _handling(_stop_cell):
            if on_ready is not None:
                on_ready()
            return run_cell(task, registry)
    except Interrupted as exc:
        return {"status": "interrupted", "signal": exc.signum, "note": _stopped(Path(task["cell_dir"]), exc.signum)}


def _cell_process(task: dict[str, Any], conn: Any, threads: int, lock: _Inherited) -> None:
    """A cell in its own spawned process, holding the sweep's ``lock`` until it ends. It leads its own process
    group, so a Ctrl-C in the terminal reaches only the sweep, which passes it on once the cell is ready."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    _stop_with_parent()
    import torch

    torch.set_num_threads(threads)
    result = run_interruptible(task, on_ready=lambda: conn.send(("ready", os.getpid())))
    with contextlib.suppress(OSError):  # the sweep may be gone
        conn.send(("result", result))


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _cell_line(cell: Cell, done: int, total: int) -> str:
    style = {"ran": "green", "done": "green", "failed": "red", "invalid": "red", "interrupted": "yellow"}.get(
        cell.status, "default"
    )
    parts = [f"[{done}/{total}]", cell.id, _assignment_text(cell), f"seed={cell.seed}", f"[{style}]{cell.status}[/]"]
    if cell.note:
        parts.append(escape(cell.note))
    if cell.val_loss is not None:
        parts.append(f"val loss (EMA) {cell.val_loss:.4g}")
    if cell.seconds is not None:
        parts.append(f"{cell.seconds:.1f} s")
    if cell.error:
        parts.append(f"[red]{escape(cell.error)}[/]")
    return "  ".join(parts)


def _died(folder: Path, exitcode: int | None, stop: _SweepStop) -> dict[str, Any]:
    """The result of a cell process that ended without one."""
    from sandbox.engine.rundir import write_json

    how = f"killed by {signal.Signals(-exitcode).name}" if exitcode and exitcode < 0 else f"exit code {exitcode}"
    if stop.signum is not None:
        return {"status": "interrupted", "signal": stop.signum, "note": f"stopped ({how})"}
    message = f"the cell's process died ({how})"
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "error.json", {"message": message, "type": "ProcessDied", "traceback": ""})
    return {"status": "failed", "error": message}


def run_sweep(plan: Plan, *, jobs: int = 1, console: Console | None = None, registry: Registry | None = None) -> Plan:
    """Run every cell not yet done, ``jobs`` at a time; returns the plan with each cell's final status.

    Holds the folder's :class:`SweepLock` throughout (cell statuses are read
    again under it) and stops on SIGINT / SIGTERM, setting
    ``plan.interrupted``. With ``jobs > 1`` each cell runs in its own
    spawned process (the installed plugins' registry; ``registry`` is used
    only in this process) with ``cores // jobs`` torch threads; on a machine
    with several CUDA GPUs, cell ``i`` of the ones to run gets
    ``cuda:{i % n_gpus}`` when its device is ``auto`` or ``cuda``.
    """
    from sandbox.console import console as default_console
    from sandbox.engine.rundir import write_json

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

        stop = _SweepStop()

        def save(state: str) -> None:
            write_json(plan.sweep_dir / SWEEP_FILE, plan_record(plan, state, stop.signum))

        def started(cell: Cell, pid: int) -> None:
            cell.status, cell.pid = "running", pid
            save("running")

        def record(cell: Cell, result: dict[str, Any]) -> None:
            nonlocal finished
            cell.status, cell.seconds, cell.note = result["status"], result.get("seconds"), result.get("note")
            cell.val_loss, cell.error = result.get("val_loss"), result.get("error")
            for note in result.get("notes", []):
                console.print(f"{cell.id}: {escape(note)}")
            finished += cell.status != "interrupted"
            console.print(_cell_line(cell, finished, total))
            if cell.status == "interrupted" and stop.signum is None:  # the cell's own handler had the signal
                stop.signum = result.get("signal")
            save("running")

        try:
            with _handling(stop):  # the cells that train first, then those that only sample from them
                for batch in (
                    [c for c in to_run if c.trained_by is None],
                    [c for c in to_run if c.trained_by is not None],
                ):
                    if stop.signum is not None or not batch:
                        continue
                    if jobs == 1:
                        _run_here(batch, tasks, stop, registry, console, started, record)
                    else:
                        _run_processes(plan, batch, tasks, jobs, stop, lock, started, record)
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
    stop: _SweepStop,
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
            with console.status(f"running cell {cell.id} ({_assignment_text(cell)}, seed {cell.seed})"):
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
    stop: _SweepStop,
    lock: SweepLock,
    started: Callable[[Cell, int], None],
    record: Callable[[Cell, dict[str, Any]], None],
) -> None:
    """``--jobs N``: up to N cell processes at once, one per cell (nothing idles, nothing is queued inside a
    pool); none starts after a signal, and none outlives this function."""
    import multiprocessing
    from multiprocessing.connection import wait

    context = multiprocessing.get_context("spawn")
    threads = max(1, _cores() // jobs)
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
            _kill(process.pid)
            process.join()


def failed(plan: Plan) -> list[Cell]:
    return [c for c in plan.cells if c.status in ("failed", "invalid")]


# --- launchers: the cells as jobs of a scheduler --------------------------------------------------------


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
    stopped. An interrupted cell, or ``stop()`` turning true, ends the job."""
    results: list[dict[str, Any]] = []
    for task in tasks:
        if stop():
            break
        if isinstance(read_json(Path(task["cell_dir"]) / "summary.json"), dict):
            results.append({"status": "done"})
            continue
        results.append(run_interruptible(task))
        if results[-1]["status"] == "interrupted":
            break
    return results


def make_launcher(
    name: str, section: tuple[str, Any] | None, registry: Registry | None = None
) -> tuple[Any, dict[str, Any]]:
    """The registered launcher ``name`` built with the recipe's ``launcher:`` section's parameters when the section
    names it (else its defaults), and those parameters as a dict."""
    import dataclasses

    from sandbox.registry import get_registry
    from sandbox.tools.launchers import LOCAL

    registry = registry if registry is not None else get_registry()
    if name not in registry.names("launcher"):
        known = ", ".join([LOCAL, *registry.names("launcher")])
        if registry.clash("launcher", name):
            registry.get("launcher", name, key="--launcher")  # two plugins registered it: says which
        raise RecipeError(f"--launcher {name}: unknown launcher; expected one of {known}")
    component = registry.get("launcher", name)
    params = section[1] if section is not None and section[0] == name else component.default_params()
    as_dict = dataclasses.asdict(params) if params is not None else {}
    return component.build(params), as_dict


def job_states(sweep_dir: Path, registry: Registry | None = None) -> dict[str, tuple[dict[str, Any], Any]]:
    """Each submitted cell's newest job record in ``jobs.json`` and that job's state (:class:`JobState`), asked of
    the launcher that submitted it."""
    from sandbox.tools.launchers import JobState, latest_by_cell, read_jobs

    latest = latest_by_cell(read_jobs(sweep_dir))
    records = list({id(r): r for r in latest.values()}.values())
    states: dict[int, Any] = {}
    by_launcher: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_launcher.setdefault(json.dumps([r.get("launcher"), r.get("params")], sort_keys=True), []).append(r)
    for group in by_launcher.values():
        try:
            launcher = _rebuild(group[0], registry)
            answers = launcher.states(group)
        except SandboxError as exc:
            answers = [JobState("unknown", str(exc))] * len(group)
        states.update({id(r): state for r, state in zip(group, answers, strict=True)})
    return {cell_id: (r, states[id(r)]) for cell_id, r in latest.items()}


def _rebuild(job: dict[str, Any], registry: Registry | None) -> Any:
    """The launcher that submitted ``job``, from the name and parameters it recorded."""
    from sandbox.recipe import _component
    from sandbox.registry import get_registry

    registry = registry if registry is not None else get_registry()
    section = {"name": job.get("launcher"), **(job.get("params") or {})}
    try:
        name, params = _component(registry, "launcher", section)
    except SandboxError as exc:
        raise SandboxError(f"cannot ask launcher {job.get('launcher')!r} for its jobs: {exc}") from exc
    return registry.get("launcher", name).build(params)


def live_jobs(sweep_dir: Path, registry: Registry | None = None) -> dict[str, tuple[dict[str, Any], Any]]:
    """The cells whose newest job is queued or running, or whose state is unknown: never submitted or run again
    meanwhile."""
    if not (Path(sweep_dir) / "jobs.json").exists():
        return {}
    return {k: v for k, v in job_states(sweep_dir, registry).items() if v[1].phase != "ended"}


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
    from sandbox.engine.rundir import write_json
    from sandbox.tools.launchers import add_jobs, record

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
        write_json(plan.sweep_dir / SWEEP_FILE, plan_record(plan, "submitted"))
        if jobs:
            groups = list(jobs.values())
            submitted = launcher.submit(
                [[cell_task(plan, c) for c in cells] for cells in groups],
                plan.sweep_dir / "jobs",
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


@dataclass
class CellStatus:
    """A cell's state for ``sandbox sweep --status``: done, running, queued, failed, interrupted, to run, invalid
    or unknown, with the job that runs it, what went wrong or how far it got, and its job's log."""

    # fmt: off
    id: str
    group: dict[str, str]
    seed: int
    state: str
    job: str | None = None              # the job id of its newest submission
    detail: str = ""                    # the error of a failed cell, the step of a running or interrupted one
    log: str | None = None              # its job's stderr log
    # fmt: on


def _step_of(folder: Path) -> tuple[str | None, Any]:
    """A cell folder's ``status.json`` status and step (the step it started or stopped at)."""
    status = read_json(folder / "status.json") if (folder / "status.json").exists() else None
    return (status.get("status"), status.get("step")) if isinstance(status, dict) else (None, None)


def _checkpointed(folder: Path) -> int | None:
    """The step of a cell folder's newest step checkpoint, from the file names (without importing torch)."""
    import re

    steps = [
        int(m.group(1)) for p in folder.glob("checkpoints/step_*.pt") if (m := re.match(r"step_(\d+)\.pt$", p.name))
    ]
    return max(steps) if steps else None


def sweep_status(sweep_dir: str | Path, registry: Registry | None = None) -> list[CellStatus]:
    """Each cell of the sweep in ``sweep_dir`` (its ``sweep.json``), from its folder and its newest job's state."""
    from sandbox.tools.launchers import JOBS_FILE

    sweep_dir = Path(sweep_dir)
    plan = read_json(sweep_dir / SWEEP_FILE)
    if not isinstance(plan, dict) or not isinstance(plan.get("cells"), list):
        raise SandboxError(f"{sweep_dir} holds no readable {SWEEP_FILE}; expected the folder of a sandbox sweep")
    jobs = job_states(sweep_dir, registry) if (sweep_dir / JOBS_FILE).exists() else {}
    local = plan.get("state") == "running" and isinstance(plan.get("pid"), int) and _alive(plan["pid"])
    rows: list[CellStatus] = []
    seen: set[str] = set()
    for entry in plan["cells"]:
        if entry["id"] in seen:
            continue  # a duplicate cell shares its twin's folder
        seen.add(entry["id"])
        folder = sweep_dir / "cells" / entry["id"]
        row = CellStatus(entry["id"], dict(entry.get("group", {})), int(entry.get("seed", 0)), "to run")
        job, state = jobs.get(entry["id"], (None, None))
        if job is not None:
            row.job, row.log = str(job.get("job_id")), job.get("stderr")
        status, step = _step_of(folder)
        error = read_json(folder / "error.json") if (folder / "error.json").exists() else None
        if entry.get("status") == "invalid":
            row.state, row.detail = "invalid", entry.get("error") or ""
        elif isinstance(read_json(folder / "summary.json"), dict):
            row.state = "done"
        elif state is not None and state.phase in ("queued", "running"):
            row.state = "running" if state.phase == "running" and folder.exists() else "queued"
            saved = _checkpointed(folder)
            row.detail = state.raw if saved is None else f"{state.raw}, checkpoint at step {saved}"
        elif state is not None and state.phase == "unknown":
            row.state, row.detail = "unknown", f"job {row.job}: {state.raw}; not submitted again meanwhile"
        elif isinstance(error, dict):
            row.state, row.detail = "failed", str(error.get("message", "error.json is unreadable"))
        elif local and entry.get("status") == "running":
            row.state, row.detail = "running", f"step {step} (sandbox sweep PID {plan['pid']})"
        elif status == "interrupted":
            row.state, row.detail = "interrupted", f"checkpoint at step {step}; sandbox sweep resumes it"
        elif state is not None:
            row.state = "failed"
            row.detail = f"job {row.job} ended ({state.raw}) without a result" + (
                f" after step {step}" if step is not None else ""
            )
        rows.append(row)
    return rows


def status_table(sweep_dir: Path, rows: list[CellStatus]) -> Table:
    """``sandbox sweep --status``: one row per cell, with counts in the title."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    order = ("done", "running", "queued", "failed", "interrupted", "to run", "unknown", "invalid")
    title = ", ".join(f"{counts[s]} {s}" for s in order if s in counts)
    table = Table(title=f"Sweep {sweep_dir}: {title}", title_justify="left")
    axes = list(rows[0].group) if rows else []
    for column in ["cell", *axes, "seed", "state", "job", "detail", "log"]:
        table.add_column(column, overflow="fold")
    style = {"done": "green", "failed": "red", "invalid": "red", "running": "cyan", "interrupted": "yellow"}
    for row in rows:
        show_log = row.state in ("failed", "unknown", "interrupted")
        table.add_row(
            row.id,
            *(row.group.get(a, "") for a in axes),
            str(row.seed),
            f"[{style.get(row.state, 'default')}]{row.state}[/]",
            row.job or "",
            escape(row.detail),
            escape(row.log or "") if show_log else "",
        )
    return table
