"""One cell of the oracle check: a sampler at one NFE budget against an exact answer, run and judged.

What the matrix (:mod:`sandbox.tools.doctor.oracle`) and the guided rows (:mod:`sandbox.tools.doctor.guided`)
share: a cell's statuses, :class:`Cell` and :class:`Row`, the sampler's ``steps`` at each budget
(:func:`plan`), and :func:`run_cell`, which samples, counts the denoise calls and scores the result.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from sandbox.registry import Component
from sandbox.sampling import CountingDenoise, nfe_for_steps, steps_for_budget

DIVERGED_SWD = 2.0  # sliced Wasserstein distance above which a cell diverged: twice the mixture's radius

OK, FAILED, NONFINITE, DIVERGED, INACCURATE, NOT_RUN = "ok", "failed", "non-finite", "diverged", "inaccurate", "n/a"
BAD = (FAILED, NONFINITE, DIVERGED, INACCURATE)


@dataclass
class Cell:
    """One (sampler, schedule, target) at one NFE budget."""

    # fmt: off
    budget: int
    status: str = NOT_RUN
    steps: int | None = None                # the sampler's `steps` parameter used (None: its defaults)
    nfe: int | None = None                  # denoise calls per sample made (guided: network evaluations)
    swd: float | None = None                # sliced Wasserstein distance to the exact mixture (guided: class_swd)
    gauss_w2: float | None = None           # W2 between fitted and exact Gaussians
    seconds: float = 0.0
    error: str = ""
    # fmt: on


@dataclass
class Row:
    """One sampler on one grid, schedule and target: a cell per budget (a guided row: one, at the largest)."""

    sampler: str
    schedule: str
    target: str
    cells: list[Cell]
    grid: str = "-"  # the time grid (sampler.grid); "-": a sampler without one
    guidance: str = ""  # guided rows: the guidance, e.g. "cfg w=1" (their cells' swd is the class_swd)


def with_params(component: Component, **values: Any) -> Any:
    """The component's default parameters with ``values`` set."""
    params = component.default_params()
    for key, value in values.items():
        setattr(params, key, value)
    return params


def has_steps(component: Component) -> bool:
    """Whether the component's parameters have a ``steps`` field the doctor can set."""
    return has_param(component, "steps")


def has_param(component: Component, key: str) -> bool:
    """Whether the component's parameters have a field ``key``."""
    return component.params is not None and key in {f.name for f in dataclasses.fields(component.params)}


def grid_label(component: Component, grid: Any = None) -> str:
    """The grid a row runs on: ``grid``, else the sampler's default ``grid`` (a list is shown as its length)."""
    if not has_param(component, "grid"):
        return "-"
    value = grid if grid is not None else component.default_params().grid
    return value if isinstance(value, str) else f"{len(value)} times"


def run_cell(
    cell: Cell,
    component: Component,
    params: Any,
    schedule,
    denoiser,
    noise: torch.Tensor,
    evaluate,
    seed: int,
    final: bool,
    *,
    metric: str = "swd",
    limit: float,
) -> None:
    """Sample ``noise`` with ``params`` into ``cell`` and score the result by ``evaluate(out)[metric]``: failed when
    it raises or returns the wrong shape, non-finite, diverged above :data:`DIVERGED_SWD`, inaccurate at the
    ``final`` budget unless below ``limit``."""
    start = time.perf_counter()
    try:
        sampler = component.build(params)
        counter = CountingDenoise(denoiser)
        out = sampler(counter, noise.clone(), schedule, generator=torch.Generator().manual_seed(seed))
        cell.nfe = counter.nfe
        if not isinstance(out, torch.Tensor) or out.shape != noise.shape:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise TypeError(f"the sampler returned {shape}; expected a tensor of shape {tuple(noise.shape)}")
        if not bool(torch.isfinite(out).all()):
            cell.status = NONFINITE
            cell.error = f"{int((~torch.isfinite(out)).any(dim=1).sum())} of {len(out)} samples are not finite"
            return
        scores = evaluate(out)
        cell.swd = float(scores[metric])
        cell.gauss_w2 = float(scores["gauss_w2"]) if "gauss_w2" in scores else None
        if not cell.swd <= DIVERGED_SWD:
            cell.status = DIVERGED
            cell.error = f"sliced Wasserstein distance {cell.swd:.3g} > {DIVERGED_SWD}"
        elif final and not cell.swd < limit:
            cell.status = INACCURATE
            cell.error = f"at the largest budget the distance {cell.swd:.3g} ({metric}) is not below {limit}"
        else:
            cell.status = OK
    except Exception as exc:
        cell.status = FAILED
        cell.error = f"{type(exc).__name__}: {exc}"
    finally:
        cell.seconds = time.perf_counter() - start


def plan(
    component: Component, schedule, budgets: tuple[int, ...], denoise, shape: tuple[int, ...], grid: str | None = None
) -> dict[int, int | None] | str:
    """Budget column -> the sampler's ``steps`` there; a sampler without ``steps`` runs its defaults once,
    in the column whose budget is nearest (in log) to its NFE. A string is the reason no plan exists."""
    try:
        if has_steps(component):
            return {i: steps_for_budget(component, schedule, b, denoise, shape, grid) for i, b in enumerate(budgets)}
        nfe = nfe_for_steps(component, schedule, None, denoise, shape, grid)
        column = min(range(len(budgets)), key=lambda i: abs(math.log(max(nfe, 1) / budgets[i])))
        return {column: None}
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
