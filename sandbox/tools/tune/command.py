"""``sandbox tune-steps``: the grid tuned, written as ``RUN_DIR/grids/<name>.json`` and reported.

The file holds the times, sampler, NFE and the objective before and after on both batches;
``sandbox sample RUN_DIR sampler.grid=<name>`` steps on it, and a recipe uses it as
``sampler.grid: path/to/<name>.json`` (:mod:`sandbox.grids` reads it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sandbox.engine.rundir import RunDir, new_run_dir, write_json, write_text
from sandbox.engine.solve import BATCH, REFERENCE_STEPS, Target, load_target
from sandbox.errors import SandboxError
from sandbox.grids import grid_record, is_grid_name
from sandbox.tools.tune.grid import ITERATIONS, MARGIN, Tuned, tune_grid
from sandbox.tools.tune.search import SEARCHES


def save_grid(target: Target, tuned: Tuned, name: Optional[str] = None) -> Path:
    """Write the grid as ``grids/<name>.json`` in the run folder (a recipe: in a new folder under ``run.output``
    holding the resolved recipe too, so ``sandbox sample`` takes it as a run folder)."""
    name = name or f"{tuned.sampler}-nfe{tuned.nfe}"
    if not is_grid_name(name):  # the names a recipe's sampler.grid accepts
        raise SandboxError(f"--name {name!r}: expected lowercase letters, digits, _ and - (a grid name)")
    if target.run_dir is not None:
        folder = RunDir(target.run_dir)
    else:
        recipe = target.recipe
        folder = RunDir(new_run_dir(recipe.run.output, f"tune-{recipe.name}"))
        write_text(folder.recipe, recipe.to_yaml())
    path = folder.grid(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    details = {
        "sampler": tuned.sampler,
        "steps": tuned.steps,
        "nfe": tuned.nfe,
        "schedule": target.recipe.components["schedule"][0],
        "source": target.source,
        "objective": "mean squared distance to the reference from the same starting noise",
        "before": tuned.before,
        "after": tuned.after,
        "kept_start": tuned.kept_start,
        "chosen": tuned.chosen,
        "best_heldout": tuned.best,
        "start_grid": tuned.start_grid,
        "start_times": tuned.start_times,
        "search_start": tuned.origin,
        "candidates": tuned.candidates,
        "search": tuned.search,
        "history": tuned.history,
        "reference": tuned.reference,
        "batch": tuned.batch,
        "heldout": tuned.heldout,
        "confirm": tuned.confirm,
        "confirmed": tuned.confirmed,
        "seed": target.recipe.run.seed,
        "evaluations": tuned.evaluations,
        "seconds": tuned.seconds,
    }
    write_json(path, grid_record(name, tuned.times, **details))
    return path


def tune_command(
    source: str,
    overrides: list[str],
    *,
    nfe: int,
    sampler: Optional[str] = None,
    name: Optional[str] = None,
    reference_sampler: Optional[str] = None,
    batch: int = BATCH,
    heldout: Optional[int] = None,
    confirm_draws: Optional[int] = None,
    iterations: int = ITERATIONS,
    reference_steps: int = REFERENCE_STEPS,
    search: str = SEARCHES[0],
    console: Optional[Console] = None,
    trusted: tuple[str, ...] = (),
) -> Path:
    """``sandbox tune-steps``: tune, save, print the before/after and how to use it; return the file.
    ``trusted``: the local plugins named with ``--plugin`` that a run folder's recipe may load."""
    from sandbox.console import console as default_console

    console = console or default_console
    if search not in SEARCHES:  # before the run folder loads
        raise SandboxError(f"--search {search!r}: expected one of {', '.join(SEARCHES)}")
    target = load_target(source, overrides, console, trusted)
    tuned = tune_grid(
        target,
        nfe,
        sampler=sampler,
        reference_sampler=reference_sampler,
        batch=batch,
        heldout=heldout,
        confirm_draws=confirm_draws,
        iterations=iterations,
        reference_steps=reference_steps,
        search=search,
        console=console,
    )
    path = save_grid(target, tuned, name)
    table = Table(
        title=f"{tuned.sampler} at NFE {tuned.nfe} ({tuned.steps} steps): mean squared distance to the reference "
        f"({tuned.reference['sampler']}, {tuned.reference['steps']} steps; its own error "
        f"{tuned.reference['self_error']:.2e})",
        title_justify="left",
    )
    for column in ("grid", f"tuning batch ({batch})", f"held-out batch ({tuned.heldout})"):
        table.add_column(column, justify="right" if "batch" in column else "left")
    label = tuned.start_grid if isinstance(tuned.start_grid, str) else f"{len(tuned.start_grid)} times"
    table.add_row(f"{label} (own)", f"{tuned.before['train']:.3e}", f"{tuned.before['heldout']:.3e}")
    if tuned.origin != next(iter(tuned.candidates)):
        table.add_row(f"{tuned.origin} (search start)", f"{tuned.candidates[tuned.origin]:.3e}", "")
    if not tuned.kept_start:
        kept = "tuned" if tuned.chosen == "tuned" else f"{tuned.chosen} (kept)"
        table.add_row(kept, f"{tuned.after['train']:.3e}", f"{tuned.after['heldout']:.3e}")
    console.print(table)
    best = tuned.best
    checks = ", ".join(f"{label} {c['gain']:.2e} +- {c['se']:.1e}" for label, c in tuned.confirmed.items())
    if tuned.kept_start and tuned.confirmed:
        console.print(
            f"[yellow]kept the own grid[/]: no grid beats it on {tuned.confirm:,} new draws by {MARGIN:g} standard "
            f"errors (gain in mean squared distance: {checks})",
            soft_wrap=True,
        )
    elif tuned.kept_start:
        console.print(
            f"[yellow]kept the own grid[/]: the best grid found ({best['grid']}, held-out {best['heldout']:.3e}) "
            f"does not beat it on held-out noise by {MARGIN:g} standard errors of the paired difference "
            f"({best['gain']:.2e} +- {best['se']:.1e})",
            soft_wrap=True,
        )
    elif tuned.confirmed:
        console.print(f"confirmed on {tuned.confirm:,} new draws (gain over the own grid: {checks})", soft_wrap=True)
    console.print("times: " + ", ".join(f"{t:.4g}" for t in tuned.times))
    console.print(
        f"{tuned.search}, error against evaluations (tuning / held-out): "
        + ", ".join(f"{int(h['evaluations'])}: {h['train']:.2e} / {h['heldout']:.2e}" for h in tuned.history),
        soft_wrap=True,
    )
    folder = path.parent.parent
    console.print(
        f"{tuned.evaluations} evaluations in {tuned.seconds:.1f} s; grid written to [bold]{escape(str(path))}[/]\n"
        f"use it: sandbox sample {escape(str(folder))} sampler.name={tuned.sampler} "
        f"sampler.steps={tuned.steps} sampler.grid={path.stem}  (a recipe: sampler.grid: {escape(str(path))})",
        soft_wrap=True,
    )
    return path
