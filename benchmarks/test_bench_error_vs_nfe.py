"""Sampling error against NFE for every registered sampler on every registered time grid, with the exact
(oracle) denoiser.

The doctor's fixed 2-D Gaussian mixture (``sandbox.tools.doctor.oracle.MIXTURE``), the
``oracle`` denoiser, the cosine schedule and the epsilon target: whatever
distance remains between 4,000 samples and the mixture is the sampler's own
discretisation error plus the finite-sample noise floor (the same score for
4,000 exact draws, drawn as a dashed line). Each sampler runs on every grid
(``sampler.grid``; a sampler without one on its defaults), its ``steps`` chosen
so that its NFE is closest to each budget of ``BUDGETS``.

Writes ``error_vs_nfe.md`` (a Markdown table) and ``error_vs_nfe.png``
(log-log plot) into ``$SANDBOX_BENCH_RESULTS`` or ``benchmarks/results/``
(which holds a ``.gitignore`` of ``*``, so nothing lands in git).

    pytest benchmarks/test_bench_error_vs_nfe.py --benchmark-only
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from sandbox.engine.precond import exact_denoise
from sandbox.registry import get_registry
from sandbox.sampling import CountingDenoise, steps_for_budget
from sandbox.tools.doctor.oracle import MIXTURE, grid_label

REGISTRY = get_registry()
SCHEDULE = "cosine"
TARGET = "epsilon"
BUDGETS = (5, 10, 20, 50, 100, 200)  # NFE per sample
SAMPLES = 4000
RESULTS = Path(os.environ.get("SANDBOX_BENCH_RESULTS", Path(__file__).parent / "results"))
CASES = [
    (name, grid)
    for name in REGISTRY.names("sampler")
    for grid in (
        REGISTRY.names("grid")
        if "grid" in getattr(REGISTRY.get("sampler", name).params, "__dataclass_fields__", {})
        else [None]
    )
]


@pytest.fixture(scope="module")
def setup():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is faster
    component = REGISTRY.get("dataset", "gaussian_mixture")
    params = component.default_params()
    for key, value in {**MIXTURE, "n_val": SAMPLES}.items():
        setattr(params, key, value)
    data = component.build(params)
    oracle = REGISTRY.get("denoiser", "oracle").build(None, tuple(data.shape)).bind(data)  # the exact E[x0 | x_t]
    schedule = REGISTRY.get("schedule", SCHEDULE).build(None)
    noise = torch.randn(SAMPLES, *data.shape, generator=torch.Generator().manual_seed(0))
    floor = data.evaluate(torch.stack([data.val[i] for i in range(len(data.val))]))
    results: dict[str, list[tuple[int, float, float]]] = {}
    yield data, oracle, schedule, noise, results
    torch.set_num_threads(threads)
    if results:
        write_report(results, floor)


def write_report(results: dict[tuple[str, str], list[tuple[int, float, float]]], floor: dict[str, float]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / ".gitignore").write_text("*\n")
    header = "| sampler | grid | " + " | ".join(f"NFE ~{b}" for b in BUDGETS) + " |"
    lines = [
        f"Sliced Wasserstein distance of {SAMPLES:,} samples to the exact 2-D mixture (actual NFE); "
        f"oracle denoiser, `{SCHEDULE}` schedule, `{TARGET}` target. Noise floor ({SAMPLES:,} exact draws): "
        f"{floor['swd']:.4f}.",
        "",
        header,
        "| --- | --- |" + " --- |" * len(BUDGETS),
    ]
    for (name, grid), points in sorted(results.items()):
        cells = ["-"] * len(BUDGETS)
        for nfe, swd, _ in points:  # a sampler without `steps` ran once: its column is the nearest budget
            column = min(range(len(BUDGETS)), key=lambda i: abs(math.log(max(nfe, 1) / BUDGETS[i])))
            cells[column] = f"{swd:.4f} ({nfe})"
        lines.append(f"| `{name}` | `{grid}` | " + " | ".join(cells) + " |")
    (RESULTS / "error_vs_nfe.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grids = sorted({grid for _, grid in results})
    columns = min(3, len(grids))
    rows = math.ceil(len(grids) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 4.0 * rows), dpi=110, squeeze=False)
    for ax, grid in zip(axes.flat, grids):
        for (name, g), points in sorted(results.items()):
            if g == grid:
                ax.loglog([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=name)
        ax.axhline(floor["swd"], color="grey", linestyle="--", linewidth=1, label=f"{SAMPLES:,} exact draws")
        ax.set_title(f"grid: {grid}", fontsize=10)
        ax.set_xlabel("network evaluations per sample (NFE)")
        ax.set_ylabel("sliced Wasserstein distance")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(grids) :]:
        ax.axis("off")
    fig.suptitle(f"Oracle denoiser, 2-D mixture, {SCHEDULE} schedule, {TARGET} target")
    fig.tight_layout()
    fig.savefig(RESULTS / "error_vs_nfe.png")
    plt.close(fig)


@pytest.mark.parametrize("name, grid", CASES, ids=[f"{n}-{g}" for n, g in CASES])
def test_error_against_nfe(benchmark, setup, name, grid):
    data, oracle, schedule, noise, results = setup
    component = REGISTRY.get("sampler", name)
    fields = component.params.__dataclass_fields__ if component.params is not None else {}
    plan = (
        [
            steps_for_budget(component, schedule, b, exact_denoise(oracle, schedule), tuple(data.shape), grid)
            for b in BUDGETS
        ]
        if "steps" in fields
        else [None]
    )

    def run():
        points = []
        for steps in plan:
            params = component.default_params()
            if steps is not None:
                params.steps = steps
            if grid is not None:
                params.grid = grid
            counter = CountingDenoise(exact_denoise(oracle, schedule, TARGET))
            out = component.build(params)(counter, noise, schedule, generator=torch.Generator().manual_seed(1))
            scores = data.evaluate(out)
            points.append((counter.nfe, scores["swd"], scores["gauss_w2"]))
        return points

    points = benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    results[(name, grid_label(component, grid))] = points
    benchmark.extra_info.update({f"swd_at_nfe_{nfe}": swd for nfe, swd, _ in points})
    assert all(math.isfinite(swd) for _, swd, _ in points)
