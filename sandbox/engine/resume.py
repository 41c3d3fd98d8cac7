"""``sandbox run --resume RUN_DIR``: continue an interrupted run in its own folder from its latest good checkpoint.

Overrides that cannot change results are accepted (:data:`RESUMABLE`:
``train.steps`` to extend a run, the device, threads, workers and the
checkpoint cadence); any other is refused with the key named, since the
run's weights, optimizer and data order belong to its recipe.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional

from sandbox.engine import checkpoint
from sandbox.engine.rundir import RunDir
from sandbox.errors import RecipeError, SandboxError
from sandbox.recipe import Recipe, load_recipe

RESUMABLE = (
    "train.steps",
    "train.checkpoint_every",
    "train.checkpoint_minutes",
    "train.keep_checkpoints",
    "run.device",
    "run.workers",
    "run.threads",
    "run.loggers",
)


def resume_recipe(
    run_dir: Path, overrides: list[str], trusted: Iterable[str] = ()
) -> tuple[Recipe, Optional[dict[str, Any]]]:
    """The run's recipe with ``overrides`` (only :data:`RESUMABLE` keys), and its latest good checkpoint's state
    (None when the run has none yet: it restarts in its folder). The folder's local plugins load only as
    :func:`sandbox.recipe.load_recipe` allows with ``trusted`` (``--plugin``)."""
    run_dir = Path(run_dir)
    folder = RunDir(run_dir)
    path = folder.recipe
    if not path.is_file():
        raise SandboxError(f"{run_dir} is not a run folder (it has no {RunDir.RECIPE})")
    trusted = list(trusted)
    original = load_recipe(path, trusted=trusted)
    recipe = load_recipe(path, overrides, trusted=trusted)
    before = original.to_dict()
    checkpoint.refuse_changes(
        before,
        recipe.to_dict(),
        RESUMABLE.__contains__,
        lambda key, old, new: (
            f"recipe key '{key}': cannot change when resuming ({old!r} in the run, {new!r} "
            f"asked); only {', '.join(RESUMABLE)} may. Start a new run instead"
        ),
        RecipeError,
    )
    checkpoint.remove_partial_writes(folder.checkpoints)
    found = checkpoint.latest_good(folder.checkpoints)
    if found is None:
        return recipe, None
    ckpt_path, state = found
    checkpoint.refuse_changes(
        state["recipe"],
        before,
        RESUMABLE.__contains__,
        lambda key, old, new: (
            f"checkpoint {ckpt_path} was written by another recipe: recipe key '{key}' is "
            f"{old!r} there and {new!r} in {path}"
        ),
        checkpoint.CheckpointError,
    )
    if state["step"] >= recipe.train.steps and folder.summary.exists():
        raise SandboxError(
            f"{run_dir} finished at step {state['step']:,}; extend it with train.steps=N "
            f"(N > {state['step']:,}) or draw samples from it with sandbox sample {run_dir}"
        )
    return recipe, state
