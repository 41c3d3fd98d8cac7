"""Drawing samples from a denoiser: the recipe's sampler, steered by its guidance, for the classes asked for.

What ``sandbox run`` (its intermediate grids and its final samples) and ``sandbox sample`` share: :func:`generate`
draws, :func:`draw` adds a progress bar, :func:`sampling_record` is what ``summary.json`` says of it, and
:func:`render` the picture of a batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import torch
from rich.console import Console

from sandbox.console import counter
from sandbox.engine.build import Parts
from sandbox.engine.condition import Conditions, draw_labels, model_classes, steer
from sandbox.engine.images import class_grid, grid
from sandbox.engine.precond import LabelledDenoise
from sandbox.protocols import Denoise
from sandbox.recipe import Recipe
from sandbox.sampling import CountingDenoise

GRID_SEED = 2  # run.seed + 2 draws the intermediate sample grids
FINAL_SEED = 3  # run.seed + 3 draws the final samples (sandbox sample repeats them with the same seed)


def render(parts: Parts, samples: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor | None:
    """The dataset's picture of a batch, or an image grid for (C, H, W) data: one row per class when the samples
    were drawn for ``labels``."""
    if parts.data.render is not None:
        return parts.data.render(samples)
    if samples.ndim == 4:
        return class_grid(samples, labels) if labels is not None else grid(samples)
    return None


@dataclass
class Drawn:
    """Samples and what drawing them cost."""

    # fmt: off
    samples: torch.Tensor
    labels: Optional[torch.Tensor]  # the class each sample was drawn for (a conditional run), else None
    nfe: int                        # network evaluations per sample: a guided step with two estimates counts two
    forwards: int                   # network calls per batch (two estimates in one batched call count one)
    steps: int                      # denoise calls the sampler made per sample (its own NFE, guidance aside)
    seconds: float
    # fmt: on


@torch.no_grad()
def generate(
    recipe: Recipe,
    parts: Parts,
    model: LabelledDenoise,
    device: torch.device,
    n: int,
    seed: int,
    *,
    guide: Optional[LabelledDenoise] = None,
    on_call: Optional[Callable[[int], None]] = None,
) -> Drawn:
    """``n`` samples from the recipe's sampler, steered by its guidance, for the classes ``eval.classes`` asks
    for (balanced, in blocks: :func:`sandbox.engine.condition.draw_labels`) in a conditional run.

    ``model(x_t, t, labels)`` is the run's denoiser, ``guide`` autoguidance's guiding model; ``on_call(b)``
    hears of every denoise call the sampler makes on a batch of ``b``.
    """
    training = isinstance(model, torch.nn.Module) and model.training
    if isinstance(model, torch.nn.Module):
        model.eval()
    null, chosen = model_classes(recipe, parts.data)
    labels = draw_labels(n, chosen) if chosen is not None else None
    noise_gen = torch.Generator().manual_seed(seed)
    step_gen = torch.Generator(device=device).manual_seed(seed)
    out, nfe, forwards, steps = [], 0, 0, 0
    start = time.perf_counter()
    for offset in range(0, n, recipe.eval.sample_batch):
        b = min(recipe.eval.sample_batch, n - offset)
        noise = torch.randn((b, *parts.data.shape), generator=noise_gen).to(device)
        batch_labels = labels[offset : offset + b].to(device) if labels is not None else None
        conditions = Conditions(model, batch_labels, null, parts.schedule, guide=guide)
        denoise = steer(parts.guidance, conditions)
        if on_call is not None:
            denoise = _reporting(denoise, on_call)
        counter = CountingDenoise(denoise)
        out.append(parts.sampler(counter, noise, parts.schedule, generator=step_gen).float().cpu())
        nfe, forwards, steps = conditions.evaluations, conditions.forwards, counter.nfe
    if isinstance(model, torch.nn.Module):
        model.train(training)
    return Drawn(torch.cat(out), labels, nfe, forwards, steps, time.perf_counter() - start)


def draw(
    recipe: Recipe, parts: Parts, model: LabelledDenoise, device: torch.device, n: int, seed: int, console: Console
) -> Drawn:
    """:func:`generate` with the run's guide and a bar that moves by ``batch / NFE`` samples per denoise call."""
    nfe = parts.sampler.nfe(parts.schedule)
    bar = counter(console)
    with bar:
        task = bar.add_task(f"sample ({recipe.components['sampler'][0]})", total=n)
        drawn = generate(
            recipe,
            parts,
            model,
            device,
            n,
            seed,
            guide=parts.guide,
            on_call=lambda b: bar.advance(task, b / max(nfe, 1)),
        )
        bar.update(task, completed=n)
    return drawn


def _reporting(denoise: Denoise, on_call: Callable[[int], None]) -> Denoise:
    def reported(x_t: torch.Tensor, t: Any) -> torch.Tensor:
        out = denoise(x_t, t)
        on_call(x_t.shape[0])
        return out

    return reported


def in_data_units(parts: Parts, samples: torch.Tensor) -> torch.Tensor:
    """``samples`` as they are saved: in the data's own units (the dataset's ``to_data``, where it has one)."""
    to_data = parts.data.to_data
    return to_data(samples) if to_data is not None else samples


def sampling_record(drawn: Drawn) -> dict[str, Any]:
    """What ``summary.json`` says of the sampling: its cost, counted honestly, and the classes drawn."""
    record: dict[str, Any] = {
        "nfe_per_sample": drawn.nfe,
        "sampler_calls_per_sample": drawn.steps,
        "forwards_per_batch": drawn.forwards,
        "seconds": drawn.seconds,
        "num_samples": len(drawn.samples),
    }
    if drawn.labels is not None:
        values, counts = torch.unique(drawn.labels, return_counts=True)
        record["classes"] = {str(int(c)): int(k) for c, k in zip(values, counts)}
    return record
