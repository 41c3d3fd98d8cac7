"""``sandbox run``: build the parts, train, validate, sample, score, and write the run folder."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from sandbox.build import Parts, build_parts, count_parameters
from sandbox.console import console as default_console
from sandbox.console import fmt, progress, table
from sandbox.device import pick_device
from sandbox.images import grid, save_png
from sandbox.recipe import Recipe
from sandbox.registry import KINDS, Registry, get_registry
from sandbox.rundir import new_run_dir, write_json
from sandbox.sampling import CountingDenoiser
from sandbox.targets import Denoiser, Parameterization
from sandbox.training import Trainer, first_tensor


def render(parts: Parts, samples: torch.Tensor) -> torch.Tensor | None:
    """The dataset's picture of a batch, or an image grid for (C, H, W) data."""
    if parts.data.render is not None:
        return parts.data.render(samples)
    if samples.ndim == 4:
        return grid(samples)
    return None


@torch.no_grad()
def generate(recipe: Recipe, parts: Parts, model: torch.nn.Module, device: torch.device, n: int,
             seed: int) -> tuple[torch.Tensor, int, float]:
    """``n`` samples from the sampler with ``model``; returns (samples, NFE per batch, seconds)."""
    was_training = model.training
    model.eval()
    denoiser = Denoiser(model, parts.schedule, Parameterization(recipe.train.target, recipe.train.sigma_data))
    noise_gen = torch.Generator().manual_seed(seed)
    step_gen = torch.Generator(device=device).manual_seed(seed)
    out, nfe = [], 0
    start = time.perf_counter()
    for offset in range(0, n, recipe.eval.sample_batch):
        b = min(recipe.eval.sample_batch, n - offset)
        noise = torch.randn((b, *parts.data.shape), generator=noise_gen).to(device)
        counter = CountingDenoiser(denoiser)
        out.append(parts.sampler(counter, noise, parts.schedule, generator=step_gen).float().cpu())
        nfe = counter.nfe
    model.train(was_training)
    return torch.cat(out), nfe, time.perf_counter() - start


def real_heldout(parts: Parts, n: int) -> torch.Tensor:
    n = min(n, len(parts.data.val))
    return torch.stack([first_tensor(parts.data.val[i]) for i in range(n)]).float()


def component_rows(recipe: Recipe, parts: Parts) -> list[list[Any]]:
    rows = []
    for kind in KINDS:
        name, params = recipe.components[kind]
        comp = parts.components[kind]
        size = fmt(count_parameters(parts.net)) if kind == "denoiser" else ""
        settings = ", ".join(f"{k}={fmt(v)}" for k, v in (dataclasses.asdict(params) if params else {}).items())
        rows.append([kind, name, comp.provider, size, settings])
    return rows


def run_recipe(recipe: Recipe, *, registry: Registry | None = None, console: Console | None = None,
               run_dir: Path | None = None) -> Path:
    """Run a validated recipe end to end and return its run folder.

    The folder is new under ``run.output`` unless ``run_dir`` (which must not
    exist yet, as a sweep's cell folder) is given.
    """
    console = console or default_console
    registry = registry or recipe.registry or get_registry()  # the plugins the recipe was validated with
    torch.manual_seed(recipe.run.seed)
    if recipe.run.threads:
        torch.set_num_threads(recipe.run.threads)
    device = pick_device(recipe.run.device)
    parts = build_parts(recipe, registry)  # validates component parameters before any work
    if run_dir is None:
        run_dir = new_run_dir(recipe.run.output, recipe.name)
    else:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=False)
    (run_dir / "recipe.yaml").write_text(recipe.to_yaml())
    (run_dir / "samples").mkdir()
    console.print(table(f"Recipe '{recipe.name}' on {device}", ["kind", "name", "provider", "parameters", "settings"],
                        component_rows(recipe, parts)))
    console.print(f"data: {len(parts.data.train):,} train, {len(parts.data.val):,} validation, shape "
                  f"{tuple(parts.data.shape)}; run folder [bold]{run_dir}[/]")

    def sample_grid(step: int, model: torch.nn.Module) -> None:
        samples, _, _ = generate(recipe, parts, model, device, recipe.eval.grid_samples, recipe.run.seed + 2)
        picture = render(parts, samples)
        if picture is not None:
            save_png(picture, run_dir / "samples" / f"step_{step:06d}.png")

    def checkpoint(trainer: Trainer) -> None:
        trainer.checkpoint(run_dir / "checkpoints" / f"step_{trainer.state.step:06d}.pt")

    trainer = Trainer(recipe, parts, device, run_dir, on_sample_grid=sample_grid, on_checkpoint=checkpoint)
    with progress(console) as bar:
        task = bar.add_task("train", total=trainer.steps, loss="-", speed="-")
        state = trainer.fit(bar, task)
    trainer.checkpoint(run_dir / "checkpoints" / "final.pt")

    console.print(f"sampling {recipe.eval.num_samples} with {recipe.components['sampler'][0]} (EMA weights)...")
    samples, nfe, sample_s = generate(recipe, parts, trainer.ema.model, device, recipe.eval.num_samples,
                                      recipe.run.seed + 3)
    picture = render(parts, samples)
    grid_path = None
    if picture is not None:
        grid_path = run_dir / "samples" / "final.png"
        save_png(picture, grid_path)
    torch.save(samples, run_dir / "samples" / "final.pt")
    quality: dict[str, Any] = {}
    if parts.data.evaluate is not None:
        quality = {"generated": parts.data.evaluate(samples),
                   "real_heldout": parts.data.evaluate(real_heldout(parts, len(samples)))}

    summary = {
        "name": recipe.name,
        "run_dir": str(run_dir),
        "device": str(device),
        "components": {
            kind: {"name": recipe.components[kind][0], "plugin": parts.components[kind].plugin,
                   "provider": parts.components[kind].provider,
                   "params": dataclasses.asdict(recipe.components[kind][1]) if recipe.components[kind][1] else {}}
            for kind in KINDS
        },
        "denoiser_parameters": count_parameters(parts.net),
        "train": {"steps": state.step, "final_train_loss": state.train_loss, "final_val_loss": state.val_loss,
                  "final_val_loss_ema": state.val_loss_ema, "best_val_loss_ema": state.best_val_loss,
                  "images_per_s": state.images_per_s, "wall_s": state.wall_s},
        "sampling": {"sampler": recipe.components["sampler"][0], "num_samples": len(samples),
                     "nfe_per_sample": nfe, "seconds": sample_s},
        "sample_quality": quality,
        "outputs": {"recipe": "recipe.yaml", "metrics": "metrics.jsonl", "checkpoint": "checkpoints/final.pt",
                    "samples": "samples/final.pt", "grid": "samples/final.png" if grid_path else None},
    }
    write_json(run_dir / "summary.json", _finite(summary))
    rows = [["final train loss", state.train_loss], ["final validation loss (EMA)", state.val_loss_ema],
            ["images/s (train)", state.images_per_s], ["training time (s)", state.wall_s],
            ["sampler NFE per sample", nfe], ["sampling time (s)", sample_s]]
    for metric, value in quality.get("generated", {}).items():
        rows.append([f"{metric}: generated / real held-out",
                     f"{fmt(value)} / {fmt(quality['real_heldout'].get(metric))}"])
    rows.append(["run folder", str(run_dir)])
    if grid_path:
        rows.append(["sample grid", str(grid_path)])
    console.print(table(f"Summary of '{recipe.name}'", ["", "value"], rows))
    return run_dir


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
