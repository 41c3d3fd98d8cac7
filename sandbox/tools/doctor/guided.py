"""The oracle check's guided rows: class-conditional sampling through a guidance, scored class by class.

Each sampler, on its own grid, the first schedule and at the largest budget only, draws every starting point
for a class (the held-out draw's labels, so the classes come in the mixture's proportions) through
:data:`GUIDANCE` at :data:`GUIDED` (``w = 1``: exactly each class's own component) with the exact conditional
``E[x_0 | x_t, c]``. A row fails as a cell of the matrix (:mod:`sandbox.tools.doctor.oracle`) does, with the
mixture's ``class_swd`` (each class's distance to its exact component) in place of the distance and
:data:`FINAL_CLASS_SWD` in place of :data:`~sandbox.tools.doctor.oracle.FINAL_SWD`; the held-out draw's own
``class_swd`` is its floor (:func:`held_out_classes`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from sandbox.engine.condition import Conditions, steer
from sandbox.engine.precond import exact_denoise
from sandbox.errors import SandboxError
from sandbox.protocols import first_tensor, item_label, null_label
from sandbox.registry import Registry
from sandbox.tools.doctor.cells import FAILED, Cell, Row, grid_label, plan, run_cell, with_params

GUIDANCE = "cfg"
GUIDED = {"scale": 1.0}  # classifier-free guidance at w = 1: exactly each class's own distribution
FINAL_CLASS_SWD = 0.05  # a guided row's class_swd must be below this (its floor, the held-out draw: about 0.015)


def held_out_classes(data: Any, held_out: list[Any]) -> tuple[torch.Tensor, dict[str, float]]:
    """The held-out draw's labels, which the guided rows sample for, and its own ``class_swd``: their floor."""
    labels = torch.stack([item_label(item) for item in held_out])
    return labels, data.evaluate_classes(torch.stack([first_tensor(item) for item in held_out]), labels)


def guided_row(
    registry: Registry,
    sampler_name: str,
    schedule_name: str,
    target: str,
    budget: int,
    exact_x0: Any,
    data: Any,
    labels: torch.Tensor,
    noise: torch.Tensor,
    seed: int,
) -> Row:
    """One sampler on its own grid, drawing each noise row for its label under :data:`GUIDANCE` at
    :data:`GUIDED`, at ``budget``; scored by ``class_swd`` (each class against its exact component)."""
    component = registry.get("sampler", sampler_name)
    cell = Cell(budget=budget)
    row = Row(sampler_name, schedule_name, target, [cell], grid_label(component), guided_label())
    try:
        schedule_component = registry.get("schedule", schedule_name)
        schedule = schedule_component.build(schedule_component.default_params())
        guidance_component = registry.get("guidance", GUIDANCE)
        guidance = guidance_component.build(dataclasses.replace(guidance_component.default_params(), **GUIDED))
        steps = plan(component, schedule, (budget,), exact_denoise(exact_x0, schedule), tuple(noise.shape[1:]))
        if isinstance(steps, str):
            raise SandboxError(steps)
    except Exception as exc:
        cell.status, cell.error = FAILED, f"{type(exc).__name__}: {exc}"
        return row
    cell.steps = steps[0]
    params = with_params(component, **({"steps": cell.steps} if cell.steps is not None else {}))
    model = exact_denoise(exact_x0, schedule, target)  # model(x_t, t, labels): the exact E[x_0 | x_t, c]
    conditions = Conditions(model, labels, null_label(len(data.classes)), schedule)
    denoiser = steer(guidance, conditions)
    run_cell(
        cell,
        component,
        params,
        schedule,
        denoiser,
        noise,
        lambda out: data.evaluate_classes(out, labels),
        seed + 2,
        final=True,
        metric="class_swd",
        limit=FINAL_CLASS_SWD,
    )
    if cell.nfe is not None:  # network evaluations per sample, which guidance may make more than denoise calls
        cell.nfe = conditions.evaluations
    return row


def guided_label() -> str:
    """``cfg w=1``: the guidance of the guided rows."""
    return f"{GUIDANCE} w={GUIDED['scale']:g}"
