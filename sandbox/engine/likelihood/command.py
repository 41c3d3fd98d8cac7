"""``sandbox likelihood RUN_DIR``: the likelihood of a finished (or interrupted) run's validation split.

The run's recipe is reloaded with ``eval.*`` overrides only (``eval.nll.*`` chooses the estimators and their
settings), the EMA weights come from the checkpoint ``sandbox sample`` would use, and each call writes
``RUN_DIR/likelihood/<estimators>-<YYYYmmdd-HHMMSS>/likelihood.json``: the records of
:func:`sandbox.engine.likelihood.evaluate.likelihood`, the checkpoint, the overrides and the device.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional

import torch
from rich.console import Console

from sandbox.console import console as default_console
from sandbox.console import table
from sandbox.engine.build import build_parts
from sandbox.engine.device import apply_threads, pick_device
from sandbox.engine.likelihood import evaluate
from sandbox.engine.precond import LabelledDenoise, exact_denoise
from sandbox.engine.rundir import RunDir, new_run_dir, write_json
from sandbox.engine.sample import ema_denoiser, find_checkpoint, sampling_recipe


def likelihood_run(
    run_dir: Path,
    overrides: list[str],
    *,
    checkpoint_path: Optional[Path] = None,
    console: Optional[Console] = None,
    trusted: Iterable[str] = (),
) -> Path:
    """Score the run's validation split with ``eval.nll``'s estimators; returns the new folder."""
    console = console or default_console
    run_dir = Path(run_dir)
    recipe = sampling_recipe(run_dir, overrides, trusted)
    apply_threads(recipe.run.threads)
    device = pick_device(recipe.run.device)
    parts = build_parts(recipe)
    evaluate.check(recipe, parts)
    model: LabelledDenoise
    step: int = 0
    ckpt: Optional[Path] = None
    if parts.exact_x0 is not None:  # an analytic denoiser: no weights
        model = exact_denoise(parts.exact_x0, parts.schedule, recipe.train.target, recipe.train.sigma_data)
    else:
        ckpt, state = find_checkpoint(run_dir, checkpoint_path, console)
        step = int(state["step"])
        model = ema_denoiser(recipe, parts, state, ckpt, device)
    records = evaluate.likelihood(recipe, parts, model, device, console)
    folder = new_run_dir(RunDir(run_dir).likelihood, "-".join(recipe.eval.nll.estimators))
    result: dict[str, Any] = {
        "run_dir": str(run_dir),
        "checkpoint": {"path": str(ckpt) if ckpt else None, "step": step},
        "overrides": list(overrides),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "likelihood": records,
    }
    write_json(folder / RunDir.LIKELIHOOD_FILE, result)
    console.print(table(f"Likelihood of '{recipe.name}' (validation split)", ["", "value"], evaluate.rows(records)))
    console.print(f"written to [bold]{folder / RunDir.LIKELIHOOD_FILE}[/]")
    return folder
