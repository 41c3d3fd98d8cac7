"""The guiding model of autoguidance: another run's, or an earlier checkpoint's, EMA network.

Karras et al. (2024), "Guiding a diffusion model with a bad version of
itself": the guide is a weaker model of the same task (smaller, or trained
for less time). A guidance whose params have a non-empty ``guide``
(:class:`sandbox.protocols.Guidance`) gets it here, checked before any
sampling: the path must be a run folder (its final checkpoint, else its newest
one that loads) or one of its checkpoint files, and its data must have the
run's item shape.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Optional, Union

import torch

from sandbox.engine import checkpoint
from sandbox.engine.build import build_parts
from sandbox.engine.precond import LabelledDenoise, Preconditioned
from sandbox.engine.rundir import RunDir
from sandbox.errors import RecipeError
from sandbox.protocols import null_label
from sandbox.recipe import Recipe, load_recipe

KEY = "guidance.guide"


def guide_path(recipe: Recipe) -> Optional[str]:
    """The guide the recipe's guidance names, or None."""
    if recipe.guidance is None:
        return None
    value = getattr(recipe.guidance[1], "guide", None)
    return value if isinstance(value, str) and value.strip() else None


def load_guide(
    recipe: Recipe, shape: tuple[int, ...], classes: int, device: torch.device, trusted: Optional[Iterable[str]] = ()
) -> Optional[LabelledDenoise]:
    """The guiding model the recipe's guidance names, as ``model(x_t, t, labels)``; None when it names none.

    A conditional guide gets the run's labels (the null class where the run has none); an unconditional one
    gets none. ``trusted``: the local plugins the guide's recipe may load (a run folder is data, not code).
    """
    value = guide_path(recipe)
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.is_dir():
        run_dir, ckpt = path, None
    elif path.is_file():
        run_dir, ckpt = path.parent.parent, path
    else:
        raise RecipeError(f"recipe key '{KEY}': {value!r} does not exist; expected a run folder or a checkpoint file")
    if not RunDir(run_dir).recipe.is_file():
        raise RecipeError(
            f"recipe key '{KEY}': {value!r} is not a run folder or one of its checkpoints (no {RunDir.RECIPE} in "
            f"{run_dir})"
        )
    guide_recipe = load_recipe(RunDir(run_dir).recipe, trusted=list(trusted) if trusted is not None else None)
    parts = build_parts(guide_recipe)
    if tuple(parts.data.shape) != tuple(shape):
        raise RecipeError(
            f"recipe key '{KEY}': the guide {value!r} was trained on items of shape {tuple(parts.data.shape)}, "
            f"this run's are {tuple(shape)}; expected a model of the same data"
        )
    if classes and parts.classes and parts.classes != classes:
        raise RecipeError(
            f"recipe key '{KEY}': the guide {value!r} knows {parts.classes} classes, this run {classes}; expected "
            "the same classes, or an unconditional guide"
        )
    if parts.net is None:
        raise RecipeError(f"recipe key '{KEY}': the guide {value!r} has an analytic denoiser; expected a trained run")
    if ckpt is None:
        found = checkpoint.latest_good(RunDir(run_dir).checkpoints)
        if found is None:
            raise RecipeError(f"recipe key '{KEY}': the run {value!r} has no checkpoint yet")
        ckpt, state = found
    else:
        try:
            state = checkpoint.load(ckpt)
        except checkpoint.CheckpointError as exc:
            raise RecipeError(f"recipe key '{KEY}': {exc}") from exc
    net = parts.net
    net.load_state_dict(state["ema"]["model"])
    net = net.to(device).eval().requires_grad_(False)
    model = Preconditioned(net, parts.schedule, guide_recipe.train.target, guide_recipe.train.sigma_data).eval()
    own = parts.classes

    def guide(x_t: torch.Tensor, t: Union[float, torch.Tensor], labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        if not own:
            return model(x_t, t)
        if labels is None:
            labels = torch.full((x_t.shape[0],), null_label(own), dtype=torch.int64, device=x_t.device)
        return model(x_t, t, labels)

    return guide
