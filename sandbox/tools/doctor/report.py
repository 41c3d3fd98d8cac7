"""What ``sandbox doctor`` prints of the oracle matrix (:mod:`sandbox.tools.doctor.oracle`): one row per sampler x
grid x schedule x target and a column per NFE budget, the guided rows (class-conditional sampling) in a small
table of their own, the failures, a summary line, and the JSON."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sandbox.engine.rundir import write_json
from sandbox.errors import SandboxError
from sandbox.plugins import LOCAL_PREFIX, is_path
from sandbox.registry import get_registry, with_local
from sandbox.tools.doctor.cells import BAD, DIVERGED_SWD, FAILED, NONFINITE, NOT_RUN, OK, Cell
from sandbox.tools.doctor.guided import FINAL_CLASS_SWD
from sandbox.tools.doctor.oracle import BUDGETS, FINAL_SWD, SAMPLES, Report, run_doctor


def render(report: Report, *, title: str | None = None) -> Table:
    """The doctor's table: one row per (sampler, schedule, target), a column per NFE budget."""
    floor = report.noise_floor.get("swd")
    table = Table(
        title=title
        or (
            f"sandbox doctor: sliced Wasserstein distance to the exact mixture "
            f"({report.samples:,} samples; noise floor {floor:.3f}) (actual NFE)"
            if floor is not None
            else "sandbox doctor"
        ),
        title_justify="left",
    )
    for column in ("sampler", "grid", "schedule", "target"):
        table.add_column(column)
    for budget in report.budgets:
        table.add_column(f"NFE ~{budget}", justify="right")
    prior = report.prior.get("swd", math.inf)
    for row in report.rows:
        table.add_row(
            row.sampler, row.grid, row.schedule, row.target, *(_cell_text(cell, prior) for cell in row.cells)
        )
    return table


def render_guided(report: Report) -> Table | None:
    """The guided rows: one per sampler, its class_swd at the largest budget; None when there are none."""
    if not report.guided:
        return None
    floor = report.class_noise_floor.get("class_swd", math.nan)
    table = Table(
        title=(
            f"guided, class-conditional: class_swd, each class's sliced Wasserstein distance to its exact component "
            f"(floor {floor:.3f}; must be below {FINAL_CLASS_SWD}) (actual NFE)"
        ),
        title_justify="left",
    )
    for column in ("sampler", "grid", "schedule", "target", "guidance"):
        table.add_column(column)
    table.add_column(f"NFE ~{report.budgets[-1]}", justify="right")
    for row in report.guided:
        table.add_row(row.sampler, row.grid, row.schedule, row.target, row.guidance, _cell_text(row.cells[0]))
    return table


def worse_than_prior(report: Report) -> int:
    """Passing cells that score worse than the starting noise."""
    prior = report.prior.get("swd", math.inf)
    return sum(1 for row in report.rows for c in row.cells if c.status == OK and c.swd is not None and c.swd > prior)


def _cell_text(cell: Cell, prior: float = math.inf) -> str:
    nfe = f" ({cell.nfe})" if cell.nfe is not None else ""
    if cell.status == NOT_RUN:
        return "[dim]-[/]"
    if cell.status == FAILED:
        return f"[bold red]failed[/]{nfe}"
    if cell.status == NONFINITE:
        return f"[bold red]nan[/]{nfe}"
    swd = cell.swd if cell.swd is not None else math.nan
    text = f"{swd:.3f}{nfe}"
    if cell.status == OK:
        return f"[yellow]{text}[/]" if swd > prior else text
    return f"[bold red]{text} {cell.status}[/]"


def summary_line(report: Report) -> str:
    counts = report.counts()
    cells = sum(len(row.cells) for row in report.rows)
    parts = [f"{counts[s]} {s}" for s in (OK, *BAD)] + ([f"{counts[NOT_RUN]} n/a"] if counts[NOT_RUN] else [])
    colour = "red" if report.exit_status else "green"
    yellow = worse_than_prior(report)
    prior = report.prior.get("swd", math.nan)
    guided = ""
    if report.guided:
        counts_guided = report.counts(guided=True)
        guided = (
            f" Guided ({report.guided[0].guidance}, {len(report.guided)} rows): "
            f"{', '.join(f'{counts_guided[s]} {s}' for s in (OK, *BAD) if counts_guided[s] or s == OK)}; red: "
            f"class_swd not below {FINAL_CLASS_SWD}."
        )
    return (
        f"[bold {colour}]{cells} cells[/] ({len(report.rows)} sampler x grid x schedule x target rows x "
        f"{len(report.budgets)} budgets): {', '.join(parts)} in {report.seconds:.1f} s. "
        f"Red: raised, non-finite, distance > {DIVERGED_SWD}, or not below {FINAL_SWD} at "
        f"NFE ~{report.budgets[-1]}. Yellow ({yellow}): passes, but worse than the starting noise "
        f"({prior:.3f}).{guided}"
    )


def oracle_command(
    *,
    samples: int = SAMPLES,
    json_path: str | None = None,
    samplers: Sequence[str] | None = None,
    schedules: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
    grids: Sequence[str] | None = None,
    budgets: Sequence[int] = BUDGETS,
    console: Console | None = None,
    plugins: Sequence[str] = (),
    threads: int = 1,
) -> int:
    """``sandbox doctor`` without a run: run the matrix, print the table, the failures and a summary; return the
    exit status.

    ``plugins`` are local plugin modules or files, loaded as a recipe's ``plugins:`` list is; ``threads``: torch's
    CPU threads (``--threads``; one by default: the matrix is thousands of tiny operations).
    """
    from sandbox.console import console as default_console

    console = console or default_console
    registry = get_registry()
    if plugins:
        registry = with_local(registry, [str(Path(p).resolve()) if is_path(p) else p for p in plugins])
        for failure in registry.failures:
            if failure.distribution.startswith(LOCAL_PREFIX):
                raise SandboxError(f"--plugin {failure.entry_point}: failed to load as a plugin: {failure.reason}")
    report = run_doctor(
        registry,
        samples=samples,
        budgets=budgets,
        samplers=samplers,
        schedules=schedules,
        targets=targets,
        grids=grids,
        console=console,
        threads=threads,
    )
    console.print(render(report))
    guided = render_guided(report)
    if guided is not None:
        console.print(guided)
    for row in report.rows + report.guided:
        for cell in row.cells:
            if cell.status in BAD:
                how = f" / {row.guidance}" if row.guidance else ""
                console.print(
                    f"[red]{row.sampler} / {row.grid} / {row.schedule} / {row.target}{how} at NFE ~{cell.budget}:[/] "
                    f"{escape(cell.error.splitlines()[0] if cell.error else cell.status)}",
                    soft_wrap=True,
                )
    console.print(summary_line(report))
    if json_path:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, report.to_dict())
        console.print(f"results written to [bold]{escape(str(path))}[/]")
    return report.exit_status
