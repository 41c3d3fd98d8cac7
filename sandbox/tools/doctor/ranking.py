"""``sandbox doctor RUN_DIR_OR_RECIPE --nfe N``: which sampler for *this* model.

Every sampler on a time grid x every grid (registered, and the run's tuned
``grids/*.json`` for that sampler and NFE) runs at ``N`` network evaluations
from the run's own starting noise, and is ranked by its mean squared distance
to one many-step reference from the same noise (:mod:`sandbox.engine.solve`).
For a deterministic solver that distance is its discretisation error; a
sampler that draws noise as it steps lands elsewhere whatever its steps, so it
is listed after them and compared by the dataset's figures (``evaluate``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sandbox.engine.rundir import RunDir, read_json, write_json
from sandbox.engine.solve import (
    BATCH,
    REFERENCE_STEPS,
    Reference,
    Target,
    is_deterministic,
    load_target,
    mse,
    reference,
    run_sampler,
    sampler_params,
    samplers_where,
    starting_noise,
    steps_for_nfe,
    with_values,
)
from sandbox.errors import SandboxError
from sandbox.grids import SUFFIX, is_grid_file, read_grid
from sandbox.registry import Component

NFE = 10  # the default budget


@dataclass
class Ranked:
    """One sampler on one grid at the NFE budget, and how far it lands from the reference."""

    # fmt: off
    sampler: str
    grid: str
    steps: Optional[int] = None
    nfe: Optional[int] = None
    error: float = math.nan                     # MSE to the reference (from the same noise)
    stochastic: bool = False                    # draws noise: its distance to the reference is not its error
    quality: dict[str, float] = field(default_factory=dict)   # the dataset's figures (evaluate) of the samples
    failure: str = ""
    # fmt: on


def rank(
    target: Target,
    nfe: int,
    *,
    samplers: Optional[list[str]] = None,
    grids: Optional[list[str]] = None,
    reference_sampler: Optional[str] = None,
    batch: int = BATCH,
    reference_steps: int = REFERENCE_STEPS,
    progress: Optional[Callable[[str, int, int], None]] = None,
) -> tuple[list[Ranked], Reference]:
    """Every sampler on a time grid x every grid (registered, and the run's tuned grids) at ``nfe``, against one
    many-step reference from the same noise; deterministic samplers first, best first.

    ``progress(what, done, total)`` is called before each piece of work: the reference, then each sampler x grid."""
    registry = target.registry
    noise = starting_noise(target, batch)
    ref_name, ref_component, ref_params = sampler_params(target, reference_sampler)
    if not is_deterministic(target, ref_component, ref_params):
        raise SandboxError(
            f"the reference sampler '{ref_name}' draws noise as it steps; one reference for every sampler needs a "
            f"deterministic one: give --reference NAME (one of {', '.join(samplers_where(target, is_deterministic))})"
        )
    grids = None if grids and "all" in grids else grids  # every grid: what the ranking runs by default
    grid_names: list[Any] = list(grids or registry.names("grid"))
    if target.run_dir is not None and not grids:
        grid_names += [str(p) for p in sorted(RunDir(target.run_dir).grids.glob(f"*{SUFFIX}"))]
    cells: list[tuple[str, Component, Any, bool, Any]] = []
    for name in samplers or registry.names("sampler"):
        try:
            name, component, params = sampler_params(target, name)
        except SandboxError:
            continue
        stochastic = not is_deterministic(target, component, params)
        for grid in grid_names:
            if is_grid_file(str(grid)):
                saved = read_json(Path(grid)) or {}
                if saved.get("sampler") != name or saved.get("nfe") != nfe:
                    continue  # a tuned grid goes with the sampler and NFE it was tuned for
            cells.append((name, component, params, stochastic, grid))
    total = len(cells) + 1
    if progress:
        progress(f"reference ({ref_name}, {reference_steps} steps)", 0, total)
    ref = reference(target, reference_sampler, reference_steps, noise, noise[:0].double())
    rows: list[Ranked] = []
    evaluate = target.parts.data.evaluate
    for done, (name, component, params, stochastic, grid) in enumerate(cells, 1):
        label = Path(grid).stem + " (tuned)" if is_grid_file(str(grid)) else str(grid)
        row = Ranked(name, label, stochastic=stochastic)
        rows.append(row)
        if progress:
            progress(f"{name} / {label}", done, total)
        try:
            value: Any = read_grid(grid) if is_grid_file(str(grid)) else grid
            gridded = with_values(params, grid=value)
            steps = steps_for_nfe(target, component, gridded, nfe)
            out, row.nfe = run_sampler(target, component, with_values(gridded, steps=steps), noise, seed=1)
            row.steps = len(value) - 1 if isinstance(value, list) else steps  # a saved grid fixes its steps
            row.error = mse(out, ref.train)
            if evaluate is not None:
                row.quality = {k: float(v) for k, v in evaluate(out.float()).items()}
        except Exception as exc:
            row.failure = f"{type(exc).__name__}: {exc}"
    if progress:
        progress("done", total, total)
    rows.sort(key=lambda r: (bool(r.failure), r.stochastic, r.error if math.isfinite(r.error) else math.inf))
    return rows, ref


def render_rank(rows: list[Ranked], ref: Reference, nfe: int, batch: int) -> Table:
    metrics = sorted({k for row in rows for k in row.quality})
    table = Table(
        title=f"samplers x grids at NFE ~{nfe}: mean squared distance to the reference from the same noise "
        f"({ref.sampler}, {ref.steps} steps, its own error {ref.self_error:.1e}; {batch} samples)",
        title_justify="left",
    )
    for column in ("#", "sampler", "grid", "steps", "NFE", "MSE to reference", *metrics):
        table.add_column(column, justify="left" if column in ("sampler", "grid") else "right")
    for i, row in enumerate(rows, 1):
        if row.failure:
            error = f"[red]failed[/]: {escape(row.failure.splitlines()[0][:60])}"
        elif row.stochastic:
            error = f"[dim]{row.error:.2e} (draws noise)[/]"
        else:
            error = f"{row.error:.2e}"
        table.add_row(
            str(i),
            row.sampler,
            row.grid,
            str(row.steps if row.steps is not None else "-"),
            str(row.nfe if row.nfe is not None else "-"),
            error,
            *(f"{row.quality[m]:.4g}" if m in row.quality else "-" for m in metrics),
        )
    return table


def ranking_json(rows: list[Ranked], ref: Reference, target: Target, nfe: int, batch: int) -> dict[str, Any]:
    """What ``--json`` writes of a ranking: the model, the budget, the reference and the rows in rank order."""
    return {
        "source": target.source,
        "nfe": nfe,
        "samples": batch,
        "reference": {
            "sampler": ref.sampler,
            "steps": ref.steps,
            "nfe": ref.nfe,
            "grid": ref.grid if isinstance(ref.grid, (str, list)) else str(ref.grid),
            "self_error": ref.self_error,
        },
        "exit_status": 1 if any(row.failure for row in rows) else 0,
        "rows": [{"rank": i, **dataclasses.asdict(row)} for i, row in enumerate(rows, 1)],
    }


def ranking_command(
    source: str,
    overrides: list[str],
    *,
    nfe: int = NFE,
    samplers: Optional[list[str]] = None,
    grids: Optional[list[str]] = None,
    reference_sampler: Optional[str] = None,
    batch: int = BATCH,
    reference_steps: int = REFERENCE_STEPS,
    json_path: Optional[str] = None,
    console: Optional[Console] = None,
    trusted: tuple[str, ...] = (),
) -> int:
    """``sandbox doctor RUN_DIR --nfe N``: print the ranking (and write it to ``json_path``); exit status 1 if a
    combination failed. ``overrides``: as ``sandbox sample`` takes them (a run folder: sampling keys only);
    ``trusted``: the local plugins named with ``--plugin`` that a run folder's recipe may load."""
    import torch

    from sandbox.console import console as default_console
    from sandbox.console import counter

    console = console or default_console
    threads = torch.get_num_threads()  # load_target sets run.threads; the caller's count comes back after
    try:
        target = load_target(source, overrides, console, trusted)
        bar = counter(console, transient=True)
        with bar:
            task = bar.add_task("rank", total=None)
            rows, ref = rank(
                target,
                nfe,
                samplers=samplers,
                grids=grids,
                reference_sampler=reference_sampler,
                batch=batch,
                reference_steps=reference_steps,
                progress=lambda text, done, total: bar.update(
                    task, description=f"rank: {text}", completed=done, total=total
                ),
            )
    finally:
        torch.set_num_threads(threads)
    console.print(render_rank(rows, ref, nfe, batch))
    console.print(
        "Deterministic samplers first, best first; a sampler that draws noise is compared by the dataset's "
        "figures, not by its distance to the reference.",
        soft_wrap=True,
    )
    if json_path:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, ranking_json(rows, ref, target, nfe, batch))
        console.print(f"results written to [bold]{escape(str(path))}[/]")
    return 1 if any(row.failure for row in rows) else 0
