"""Checkpoints that cannot be half-written, and that load safely.

A checkpoint is one dict holding everything that changes results (after
torchtitan's ``components/checkpoint.py``): weights, EMA weights, optimizer,
learning-rate schedule, step, every random-number state, the position in
the data order, the loop's running figures and the resolved recipe. It is
written atomically (:func:`sandbox.engine.rundir.atomic_write`) as
``checkpoints/step_NNNNNN.pt`` or ``final.pt``, then the ``latest`` pointer
is updated the same way; ``train.keep_checkpoints`` keeps the newest step
files. Loading uses ``torch.load(..., weights_only=True)``, so a checkpoint
never executes code, and a truncated, foreign or mismatched file stops with
:class:`CheckpointError` naming the file and what is wrong.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import torch

from sandbox.engine.rundir import RunDir, atomic_write, partial_write_owner, write_text
from sandbox.engine.runlock import host, lock_holder, pid_alive
from sandbox.errors import SandboxError

# fmt: off
FORMAT = 1                      # bumped when the layout of the dict changes
LATEST = RunDir.LATEST          # the pointer file: the name of the newest good checkpoint
FINAL = RunDir.FINAL_CHECKPOINT
_STEP = re.compile(r"^step_(\d+)\.pt$")
KEYS = ("format", "step", "model", "ema", "optimizer", "lr_scheduler", "rng", "data", "loop", "recipe")
# fmt: on


class CheckpointError(SandboxError):
    """A checkpoint file that cannot be used: truncated, not a checkpoint, or from another recipe."""


def step_name(step: int) -> str:
    return RunDir.STEP_CHECKPOINT.format(step)


def step_of(path: Path) -> Optional[int]:
    """The step in a ``step_NNNNNN.pt`` name; None for another name (``final.pt``)."""
    match = _STEP.match(path.name)
    return int(match.group(1)) if match else None


def save(folder: Path, name: str, state: dict[str, Any], *, keep: int = 0) -> Path:
    """Write ``state`` as ``folder/name`` atomically, point ``latest`` at it; keep the newest ``keep`` step files.

    Any write that fails (a full disk, no permission) stops with one :class:`SandboxError` naming the file and
    leaves no partial file: the checkpoint, the ``latest`` pointer, and the removal of older step files alike.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SandboxError(f"could not create the checkpoint folder {folder}: {exc.strerror or exc}") from exc
    path = folder / name

    def write(handle: Any) -> None:
        try:
            torch.save({"format": FORMAT, **state}, handle)
        except RuntimeError as exc:  # torch's writer reports a failed write as a RuntimeError
            raise OSError(str(exc).splitlines()[0] if str(exc) else "torch.save failed") from exc

    atomic_write(path, write)
    write_text(folder / LATEST, name + "\n")
    if keep > 0:
        steps = sorted(p for p in folder.iterdir() if step_of(p) is not None)
        for old in steps[:-keep]:
            try:
                old.unlink(missing_ok=True)
            except OSError as exc:
                raise SandboxError(
                    f"could not remove the old checkpoint {old} (train.keep_checkpoints={keep}): "
                    f"{exc.strerror or exc}; {path} is written"
                ) from exc
    return path


def load(path: Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; a bad file raises :class:`CheckpointError`."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint {path} does not exist") from exc
    except Exception as exc:  # truncated, garbage, or objects weights_only refuses
        detail = (str(exc).splitlines() or ["no detail"])[0].split(". ")[0]
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {detail}); it is "
            "truncated, corrupt or not a sandbox checkpoint"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"checkpoint {path} is not a sandbox checkpoint of format {FORMAT} (found {found!r})")
    missing = [key for key in KEYS if key not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    return state


def differences(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted recipe keys whose values differ between two resolved recipes (as ``Recipe.to_dict``)."""
    out = []
    for key in sorted(set(saved) | set(current)):
        dotted = f"{prefix}{key}"
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, dotted + ".")
        elif a != b:
            out.append(dotted)
    return out


def value_at(tree: dict[str, Any], dotted: str) -> Any:
    """The value of a dotted recipe key in a ``Recipe.to_dict`` tree (an empty dict when absent)."""
    node: Any = tree
    for part in dotted.split("."):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return node


def candidates(folder: Path) -> list[Path]:
    """The checkpoints of a run folder, newest first: the ``latest`` pointer's, then by step, ``final.pt`` first."""
    if not folder.is_dir():
        return []
    steps = {p: step for p in folder.iterdir() if (step := step_of(p)) is not None}
    files = sorted(steps, key=steps.__getitem__, reverse=True)
    if (folder / FINAL).exists():
        files.insert(0, folder / FINAL)
    pointer = folder / LATEST
    if pointer.exists():
        try:
            named = folder / pointer.read_text().strip()
        except (OSError, ValueError):  # unreadable or garbage: the files speak for themselves
            return files
        if named in files:
            files.remove(named)
            files.insert(0, named)
    return files


def latest_good(folder: Path) -> Optional[tuple[Path, dict[str, Any]]]:
    """The newest checkpoint in ``folder`` that loads, or None when there is none.

    Unreadable ones are skipped with a warning; when every one is unreadable,
    :class:`CheckpointError` lists them (nothing is silently restarted). Only
    reads: a run may be writing its next checkpoint meanwhile.
    """
    errors = []
    for path in candidates(folder):
        try:
            return path, load(path)
        except CheckpointError as exc:
            errors.append(str(exc))
            warnings.warn(f"{exc}; trying an older one", stacklevel=2)
    if errors:
        raise CheckpointError("no usable checkpoint: " + "; ".join(errors))
    return None


def remove_partial_writes(folder: Path) -> None:
    """Delete the temporary files of checkpoint writes that a crash interrupted (for the run that resumes).

    A temporary file is ``.{name}.{pid}.tmp`` (:func:`sandbox.engine.rundir.atomic_write`): only this process's
    own, and those whose process is gone, are removed, and none while another process holds the run's lock
    (it may be writing one now, perhaps from another host).
    """
    if not folder.is_dir():
        return
    holder = lock_holder(folder.parent)
    other = holder is not None and (holder.get("pid"), holder.get("host")) != (os.getpid(), host())
    for partial in folder.glob(".*.tmp"):
        pid = partial_write_owner(partial)
        if pid == os.getpid() or (pid is not None and not other and not pid_alive(pid)):
            partial.unlink(missing_ok=True)


def refuse_changes(
    before: dict[str, Any],
    after: dict[str, Any],
    may_change: Callable[[str], bool],
    message: Callable[[str, Any, Any], str],
    error: type[SandboxError],
) -> None:
    """Raise ``error(message(key, old, new))`` for the first recipe key that differs and may not change."""
    for key in differences(before, after):
        if not may_change(key):
            raise error(message(key, value_at(before, key), value_at(after, key)))


def save_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write ``tensors`` as a ``.safetensors`` file (the format other tools read) atomically."""
    from safetensors.torch import save

    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)
    atomic_write(path, lambda handle: handle.write(data))
