"""``sandbox doctor`` without a run: every registered sampler x grid x schedule x target against an exact answer.

The network is taken out of the question: the ``oracle`` denoiser returns the
exact ``E[x_0 | x_t]`` of a fixed 2-D ``gaussian_mixture``, so whatever
distance remains between the samples and the mixture is the sampler's and
the schedule's own discretisation error (plus the target conversion of
:func:`sandbox.engine.precond.exact_denoise` and the finite-sample noise floor). Each
combination runs at a few budgets of network evaluations (NFE); a cell
(:mod:`sandbox.tools.doctor.cells`) fails when it raises, returns non-finite
values, lands farther from the mixture than
:data:`~sandbox.tools.doctor.cells.DIVERGED_SWD`, or, at the largest budget, is
not below :data:`FINAL_SWD`. A cell that passes but scores worse than the sampler's
starting noise itself (the prior, N(0, I)) is shown in yellow: legitimate
for a coarse budget, worth knowing before choosing one.

Each sampler runs on its own default time grid, or (``grids``) on each named
registered grid, ``all`` for every one; a sampler without a ``grid`` parameter
runs its defaults. The doctor iterates the registry: a sampler, grid or
schedule is checked the moment it registers. It names only the three built-ins it uses on purpose, the
``oracle`` denoiser, the ``gaussian_mixture`` dataset and the ``cfg`` guidance
(:data:`sandbox.tools.doctor.guided.GUIDANCE`). A sampler's ``steps`` at a
budget are :func:`sandbox.sampling.steps_for_budget`'s.

The guided rows (:mod:`sandbox.tools.doctor.guided`) check class-conditional
sampling: each sampler once, through a guidance, scored class by class.

:func:`run_doctor` runs the matrix and the guided rows; :mod:`sandbox.tools.doctor.report` prints them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from rich.console import Console

from sandbox.console import counter
from sandbox.engine.precond import exact_denoise
from sandbox.engine.rundir import json_safe
from sandbox.errors import SandboxError
from sandbox.protocols import first_tensor
from sandbox.registry import Registry, get_registry, use_registry
from sandbox.targets import TARGETS
from sandbox.tools.doctor.cells import (
    BAD,
    DIVERGED_SWD,
    FAILED,
    NOT_RUN,
    OK,
    Cell,
    Row,
    grid_label,
    has_param,
    plan,
    run_cell,
    with_params,
)
from sandbox.tools.doctor.guided import FINAL_CLASS_SWD, GUIDANCE, GUIDED, guided_label, guided_row, held_out_classes

DATASET = "gaussian_mixture"
DENOISER = "oracle"
#: the fixed mixture: 8 components of std 0.1 on the unit circle, unequal weights
MIXTURE = {
    "dim": 2,
    "components": 8,
    "radius": 1.0,
    "std": 0.1,
    "weights": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
    "n_train": 1,
    "seed": 0,
}
# fmt: off
BUDGETS = (10, 25, 100)  # NFE budgets (network evaluations per sample)
SAMPLES = 2000           # samples per cell
FINAL_SWD = 0.1          # the largest budget must score below this (noise floor of 2,000 exact draws: about 0.03)
# fmt: on


@dataclass
class Report:
    # fmt: off
    rows: list[Row]
    budgets: tuple[int, ...]
    samples: int
    noise_floor: dict[str, float]           # the same scores for an exact draw of `samples` points
    prior: dict[str, float]                 # the same scores for the starting noise itself
    seconds: float = 0.0
    providers: dict[str, str] = field(default_factory=dict)
    guided: list[Row] = field(default_factory=list)   # class-conditional sampling, guided, at the largest budget
    class_noise_floor: dict[str, float] = field(default_factory=dict)  # class_swd of the held-out exact draw
    # fmt: on

    def counts(self, guided: bool = False) -> dict[str, int]:
        """Cells by status: the matrix's, or (``guided``) the guided rows'."""
        out = dict.fromkeys((OK, *BAD, NOT_RUN), 0)
        for row in self.guided if guided else self.rows:
            for cell in row.cells:
                out[cell.status] += 1
        return out

    @property
    def exit_status(self) -> int:
        return 1 if any(cell.status in BAD for row in self.rows + self.guided for cell in row.cells) else 0

    def to_dict(self) -> dict[str, Any]:
        return json_safe(
            {
                "samples": self.samples,
                "budgets": list(self.budgets),
                "dataset": {"name": DATASET, **MIXTURE},
                "denoiser": DENOISER,
                "guidance": {"name": GUIDANCE, **GUIDED},
                "thresholds": {
                    "diverged_swd": DIVERGED_SWD,
                    "final_swd": FINAL_SWD,
                    "final_class_swd": FINAL_CLASS_SWD,
                },
                "noise_floor": self.noise_floor,
                "class_noise_floor": self.class_noise_floor,
                "prior": self.prior,
                "seconds": self.seconds,
                "counts": self.counts(),
                "guided_counts": self.counts(guided=True),
                "exit_status": self.exit_status,
                "providers": self.providers,
                "rows": [dataclasses.asdict(row) for row in self.rows],
                "guided_rows": [dataclasses.asdict(row) for row in self.guided],
            }
        )


def _selected(names: Iterable[str], only: Sequence[str] | None, kind: str, registry: Registry) -> list[str]:
    if not only:
        return list(names)
    for name in only:
        registry.get(kind, name)  # unknown names: the registry's message with suggestions
    return [n for n in names if n in only]


def run_doctor(
    registry: Registry | None = None,
    *,
    samples: int = SAMPLES,
    budgets: Sequence[int] = BUDGETS,
    seed: int = 0,
    samplers: Sequence[str] | None = None,
    schedules: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
    grids: Sequence[str] | None = None,
    console: Console | None = None,
    threads: int = 1,
) -> Report:
    """Sample the mixture with the oracle for every selected sampler x grid x schedule x target at each budget.

    ``grids``: registered grid names (``all``: every one); None runs each sampler on its default grid.
    """
    registry = registry or get_registry()
    budgets = tuple(sorted(int(b) for b in budgets))
    if samples < 2 or not budgets or budgets[0] < 1:
        raise SandboxError(
            f"the doctor needs at least 2 samples and positive NFE budgets, got {samples} "
            f"samples and budgets {list(budgets)}"
        )
    for target in targets or ():
        if target not in TARGETS:
            raise SandboxError(f"unknown target '{target}'; expected one of {', '.join(TARGETS)}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # default 1: thousands of tiny ops, which threads only slow, more so when busy
    grid_names: list[str | None] = [None]
    if grids:
        every = registry.names("grid")
        grid_names = list(every) if "all" in grids else list(_selected(every, grids, "grid", registry))
    try:
        with use_registry(registry):  # the samplers' grids resolve in the doctor's registry (its --plugin ones too)
            return _run(registry, samples, budgets, seed, samplers, schedules, targets, grid_names, console)
    finally:
        torch.set_num_threads(before)


def _run(
    registry: Registry,
    samples: int,
    budgets: tuple[int, ...],
    seed: int,
    samplers,
    schedules,
    targets,
    grid_names: list[str | None],
    console: Console | None,
) -> Report:
    start = time.perf_counter()
    data_component = registry.get("dataset", DATASET)
    data = data_component.build(with_params(data_component, **{**MIXTURE, "n_val": samples}))
    oracle_component = registry.get("denoiser", DENOISER)
    exact_x0 = oracle_component.build(oracle_component.default_params(), tuple(data.shape)).bind(data)

    sampler_names = _selected(registry.names("sampler"), samplers, "sampler", registry)
    schedule_names = _selected(registry.names("schedule"), schedules, "schedule", registry)
    target_names = [t for t in TARGETS if not targets or t in targets]
    noise = torch.randn(samples, *data.shape, generator=torch.Generator().manual_seed(seed))
    held_out = [data.val[i] for i in range(len(data.val))]  # an exact draw of `samples` labelled points
    noise_floor = data.evaluate(torch.stack([first_tensor(item) for item in held_out]))
    prior = data.evaluate(noise)
    providers = {
        f"{kind} {name}": registry.get(kind, name).provider
        for kind, names in (("sampler", sampler_names), ("schedule", schedule_names))
        for name in names
    }

    rows: list[Row] = []
    runs = [
        (name, grid)
        for name in sampler_names
        for grid in (grid_names if has_param(registry.get("sampler", name), "grid") else [None])
    ]
    guided_target = "x0" if "x0" in target_names else target_names[0]
    conditional = data.classes is not None and data.evaluate_classes is not None
    total = len(runs) * len(schedule_names) * len(target_names) * len(budgets)
    total += len(sampler_names) if conditional else 0
    bar = counter(console, transient=True)
    with bar:
        task = bar.add_task("doctor", total=total)
        for schedule_name in schedule_names:
            schedule_component = registry.get("schedule", schedule_name)
            try:
                schedule = schedule_component.build(schedule_component.default_params())
                schedule_error = ""
            except Exception as exc:
                schedule, schedule_error = None, f"schedule failed to build: {type(exc).__name__}: {exc}"
            for sampler_name, grid in runs:
                component = registry.get("sampler", sampler_name)
                label = grid_label(component, grid)
                steps_at = (
                    plan(component, schedule, budgets, exact_denoise(exact_x0, schedule), tuple(data.shape), grid)
                    if schedule is not None
                    else {}
                )
                for target in target_names:
                    cells = [Cell(budget=b) for b in budgets]
                    row = Row(sampler_name, schedule_name, target, cells, label)
                    rows.append(row)
                    bar.update(task, description=f"doctor: {sampler_name} / {label} / {schedule_name} / {target}")
                    if schedule is None or isinstance(steps_at, str):
                        for cell in cells:
                            cell.status, cell.error = FAILED, schedule_error or str(steps_at)
                        bar.advance(task, len(cells))
                        continue
                    denoiser = exact_denoise(exact_x0, schedule, target)
                    last = max(steps_at)
                    for i, steps in steps_at.items():
                        cells[i].steps = steps
                        values: dict[str, Any] = {"steps": steps} if steps is not None else {}
                        if grid is not None:
                            values["grid"] = grid
                        params = with_params(component, **values)
                        run_cell(
                            cells[i],
                            component,
                            params,
                            schedule,
                            denoiser,
                            noise,
                            data.evaluate,
                            seed + 2,
                            final=i == last,
                            limit=FINAL_SWD,
                        )
                    bar.advance(task, len(cells))
        guided: list[Row] = []
        floor: dict[str, float] = {}
        if conditional:
            labels, floor = held_out_classes(data, held_out)
            # one guided row per sampler, on the first schedule and at the largest budget only: the matrix
            # above covers the schedules; these check that each sampler carries the classes through guidance
            for sampler_name in sampler_names:
                bar.update(task, description=f"doctor: {sampler_name} / {schedule_names[0]} / {guided_label()}")
                guided.append(
                    guided_row(
                        registry,
                        sampler_name,
                        schedule_names[0],
                        guided_target,
                        budgets[-1],
                        exact_x0,
                        data,
                        labels,
                        noise,
                        seed,
                    )
                )
                bar.advance(task, 1)
    return Report(
        rows=rows,
        budgets=budgets,
        samples=samples,
        noise_floor=noise_floor,
        prior=prior,
        seconds=time.perf_counter() - start,
        providers=providers,
        guided=guided,
        class_noise_floor=floor,
    )
