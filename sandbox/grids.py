"""The time grid in one place: what ``sampler.grid`` may say, the times it resolves to, and grid files.

A sampler's ``grid`` parameter (:class:`sandbox.protocols.Grid` for the
protocol) is one of three things:

- a registered grid's name (``karras``; ``sandbox list`` shows them), built
  through the registry with the sampler's fields of the same name (``rho``);
- an explicit list of times, strictly descending from at most 1 to exactly 0;
- the path of a ``.json`` grid file, as ``sandbox tune-steps`` writes it:
  an object whose ``times`` are such a list (:func:`grid_record`, :func:`read_grid`).

:func:`check_grid` checks the value where the params dataclass is built
(:func:`sandbox.params.time_grid` calls it), :func:`sampler_grid` resolves it
when the sampler is built, and :func:`grid_times` checks what a grid returns.
A run folder keeps its tuned grids as ``grids/<name>.json``
(:meth:`sandbox.engine.rundir.RunDir.grid`). Torch is imported only where a
grid is evaluated, so params modules stay torch-free.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandbox.errors import ParameterError, SandboxError

if TYPE_CHECKING:
    import torch

    from sandbox.protocols import Grid, Schedule

NAME = re.compile(r"^[a-z][a-z0-9_\-]*$")  # a grid's name: lowercase letters, digits, _ and -
SUFFIX = ".json"  # a grid file
EXPECTED = (
    "a registered grid's name (sandbox list), a .json grid file (sandbox tune-steps) or a list of times "
    "descending from at most 1 to exactly 0"
)


# ------------------------------------------------------------------------------------------------ validation


def descending(times: Sequence[float]) -> bool:
    """Whether ``times`` are at least two, strictly descending from at most 1 to exactly 0."""
    return len(times) >= 2 and times[0] <= 1 and times[-1] == 0 and all(a > b for a, b in zip(times[:-1], times[1:]))


def is_grid_name(value: Any) -> bool:
    """Whether ``value`` can name a grid (a registered one, or a run's tuned ``grids/<name>.json``)."""
    return isinstance(value, str) and bool(NAME.match(value))


def is_grid_file(value: Any) -> bool:
    return isinstance(value, str) and value.endswith(SUFFIX)


def check_grid(value: Any, key: str = "grid") -> str | list[float]:
    """``value`` as ``sampler.grid`` takes it (a list becomes floats), else :class:`ParameterError` on ``key``.

    A name is checked against the registry only when the sampler is built
    (:func:`sandbox.params.time_grid` runs where no registry is at hand), a file when it is read.
    """
    if isinstance(value, str):
        if is_grid_file(value) or is_grid_name(value):
            return value
        raise ParameterError(key, value, EXPECTED)
    if not (isinstance(value, (list, tuple)) and _numbers(value)):
        raise ParameterError(key, value, EXPECTED)
    if not descending(value):
        raise ParameterError(key, list(value), EXPECTED)
    return [float(v) for v in value]


# ------------------------------------------------------------------------------------------------ resolution


def lowest_time(schedule: Schedule) -> float:
    """The smallest positive time of the schedule's finest grid, where grids in noise level end before 0.

    ``1 / T`` for a discrete schedule of ``T`` steps (DDPM's first step; the
    ``sigma_min`` k-diffusion reads off such a model), the last nonzero time of
    ``timesteps(1000)`` otherwise: 1e-3 for an evenly spaced grid (the
    ``epsilon`` of Lu et al. 2022), the time of ``sigma_min`` for ``edm``.
    """
    return float(schedule.timesteps(schedule.num_steps or 1000)[-2])


class ExplicitGrid:
    """The times a recipe lists (``sampler.grid: [1.0, 0.6, 0.2, 0.0]``): they fix the steps; ``steps`` is not read."""

    def __init__(self, times: list[float]):
        self.times = [float(t) for t in times]

    def __call__(self, schedule: Schedule, steps: int) -> torch.Tensor:
        import torch

        return torch.tensor(self.times, dtype=torch.float64)


def sampler_grid(params: Any, registry: Any = None) -> Grid:
    """The :class:`sandbox.protocols.Grid` a sampler's ``params.grid`` chooses, built through the registry.

    The grid's own params dataclass is filled from the sampler's fields of the
    same name (``rho``). An unknown name raises :class:`ParameterError` on
    ``grid``, which the engine reports under the sampler's recipe section.
    ``registry``: the one in use (:func:`sandbox.registry.get_registry`) by default.
    """
    from sandbox.registry import get_registry

    value = params.grid
    if isinstance(value, (list, tuple)):
        return ExplicitGrid(list(value))
    if is_grid_file(value):
        try:
            return ExplicitGrid(read_grid(value))
        except Exception as exc:
            raise ParameterError("grid", value, f"a readable grid file ({exc})") from None
    registry = registry if registry is not None else get_registry()
    if value not in registry.components["grid"] and not registry.clash("grid", value):
        close = difflib.get_close_matches(str(value), registry.names("grid"), n=1)
        hint = f". Did you mean '{close[0]}'?" if close else ""
        known = ", ".join(registry.names("grid")) or "none registered"
        raise ParameterError("grid", value, f"a registered grid ({known}) or a list of times from 1 to 0{hint}")
    component = registry.get("grid", value)  # a clash: the registry's message
    grid_params = None
    if component.params is not None:
        shared = {f.name for f in dataclasses.fields(component.params)} & {f.name for f in dataclasses.fields(params)}
        grid_params = component.params(**{name: getattr(params, name) for name in shared})
    return component.build(grid_params)


def grid_times(grid: Grid, schedule: Schedule, steps: int) -> list[float]:
    """``grid(schedule, steps)`` as Python floats, checked against :class:`sandbox.protocols.Grid`."""
    import torch

    ts = torch.as_tensor(grid(schedule, steps)).to(torch.float64)
    if ts.ndim != 1 or len(ts) < 2:
        raise ValueError(f"the time grid {grid!r} returned shape {tuple(ts.shape)}; expected at least 2 times")
    times = ts.tolist()
    if not descending(times):
        raise ValueError(
            f"the time grid {grid!r} returned {[round(t, 6) for t in times[:8]]}...; expected strictly "
            "descending times from at most 1 to exactly 0"
        )
    return times


# ------------------------------------------------------------------------------------------------ files


def grid_record(name: str, times: list[float], **details: Any) -> dict[str, Any]:
    """The JSON object of a grid file: its ``name``, its ``times`` (what :func:`read_grid` reads), then
    ``details`` (how it was found: sampler, NFE, objective...)."""
    if not descending(times):
        raise SandboxError(f"grid {name}: times {times[:8]}...; expected them descending from at most 1 to 0")
    return {"name": name, "times": [float(t) for t in times], **details}


def read_grid(path: str | Path) -> list[float]:
    """The ``times`` of a grid file (``sandbox tune-steps``'s JSON), checked."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SandboxError(f"{path}: no such grid file") from None
    except (OSError, ValueError) as exc:
        raise SandboxError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    times = data.get("times") if isinstance(data, dict) else None
    if not (isinstance(times, list) and _numbers(times) and descending(times)):
        raise SandboxError(f"{path}: expected a JSON object whose 'times' descend from at most 1 to exactly 0")
    return [float(t) for t in times]


def _numbers(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
