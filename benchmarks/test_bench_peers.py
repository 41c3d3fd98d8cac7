"""Sampling error at 5, 10 and 20 NFE side by side with diffusers' DPM-Solver++ and UniPC, on exact mixture oracles.

Two mixtures whose exact denoiser ``E[x0 | x_t]`` is known (the ``gaussian_mixture`` dataset):

- ``2d``: 8 components of std 0.1 evenly on the unit circle, equal weights;
- ``64d``: 10 components of std 0.1, means uniform in ``[-1, 1]^64``.

Everything runs on one schedule, the ``cosine`` one (diffusers' ``squaredcos_cap_v2`` on T = 1000 steps; the
sandbox's time ``t`` is diffusers' timestep ``k`` as ``(k + 1) / T``), with the epsilon target, from one fixed
batch of starting noise. The score is the sliced Wasserstein distance (SWD) of the samples to 200,000 exact draws;
as many exact draws as samples score the finite-sample floor. On ``2d`` the probability-flow ODE solved with
1,000 UniPC steps from the same noise (converged: 1.8e-5 rms from a 999-step solution on another grid) is an
exact draw coupled to the samples, and the SWD to it ("coupled") removes the floor's share that all
samplers from this noise have in common (how many samples each component receives).

- **Peers** (diffusers, when installed): ``DPMSolverMultistepScheduler`` (``dpmsolver++``, order 2 and 3) and
  ``UniPCMultistepScheduler`` (``bh2``, order 2 and 3), each on every ``timestep_spacing`` (linspace, leading,
  trailing) with its default sigmas and with ``use_lu_lambdas`` (DPM-Solver++, uniform in log-SNR) or
  ``use_karras_sigmas`` (UniPC); a configuration diffusers refuses is left out. The best configuration per
  scheduler and NFE is the peers' figure, so they are compared at their best on this data.
  k-diffusion's DPM++(2M) is the built-in ``dpmpp_2m`` update (``tests/plugins/test_solvers.py``), so on the same
  grid it is the ``dpmpp_2m`` row.
- **Sandbox**: each deterministic built-in on its own grid, and on the grid ``sandbox tune-steps`` finds for
  it (:func:`sandbox.tools.tune.tune_grid` with its defaults, on the recipe's own 2 x 256 starting draws, which are
  not the evaluation noise).

Writes ``peers.md`` into ``$SANDBOX_BENCH_RESULTS`` or ``benchmarks/results/``.

    pytest benchmarks/test_bench_peers.py --benchmark-only
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console
from sandbox_plugins.datasets.gaussian_mixture import Reference, mixture

from sandbox.engine.solve import Target, load_target, run_sampler, sampler_params, steps_for_nfe, with_values
from sandbox.tools.tune import tune_grid

ORACLE = Path(__file__).resolve().parents[1] / "recipes" / "oracle_mixture.yaml"
RESULTS = Path(os.environ.get("SANDBOX_BENCH_RESULTS", Path(__file__).parent / "results"))
# fmt: off
MIXTURES = {                            # recipe overrides of recipes/oracle_mixture.yaml, samples scored
    "2d": (["dataset.weights=null"], 20_000),
    "64d": (["dataset.dim=64", "dataset.components=10"], 20_000),
}
BUDGETS = (5, 10, 20)                   # NFE per sample
REFERENCE_DRAWS = 200_000               # exact draws the SWD compares against
COUPLED_STEPS = 1000                    # UniPC steps of the coupled exact flow (2-D)
SAMPLERS = ("unipc", "dpmpp_3m", "dpmpp_2m", "ddim", "heun")
TUNED = ("unipc", "dpmpp_3m", "dpmpp_2m")
T = 1000
# fmt: on


class Scorer:
    """SWD to a large exact draw, and (2-D) to the exact flow from the same noise."""

    def __init__(self, target: Target, n: int):
        mix = mixture(target.recipe.components["dataset"][1])
        self.mix = mix
        self.exact = Reference(mix.sample(REFERENCE_DRAWS, torch.Generator().manual_seed(7)))
        self.noise = torch.randn(n, mix.dim, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
        self.floor = self.exact.sliced_wasserstein(mix.sample(n, torch.Generator().manual_seed(8)))
        self.coupled: Reference | None = None
        if mix.dim == 2:
            _, component, params = sampler_params(target, "unipc")
            flow, _ = run_sampler(target, component, with_values(params, steps=COUPLED_STEPS), self.noise)
            self.coupled = Reference(flow)

    def __call__(self, x: torch.Tensor) -> dict[str, float]:
        out = {"swd": self.exact.sliced_wasserstein(x)}
        if self.coupled is not None:
            out["coupled"] = self.coupled.sliced_wasserstein(x)
        return out


def diffusers_configs() -> list[tuple[str, Any, dict[str, Any]]]:
    diffusers = pytest.importorskip("diffusers")
    configs = []
    for label, cls, extra in (
        ("DPM-Solver++", diffusers.DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
        ("UniPC", diffusers.UniPCMultistepScheduler, {"solver_type": "bh2"}),
    ):
        sigmas = "use_lu_lambdas" if label == "DPM-Solver++" else "use_karras_sigmas"
        for order in (2, 3):
            for spacing in ("linspace", "leading", "trailing"):
                for special in (False, True):
                    kwargs = {**extra, "solver_order": order, "timestep_spacing": spacing, sigmas: special}
                    configs.append((label, cls, kwargs))
    return configs


def run_diffusers(cls: Any, kwargs: dict[str, Any], nfe: int, scorer: Scorer) -> tuple[torch.Tensor, int]:
    """diffusers' scheduler loop, the exact denoiser turned into the epsilon its model would predict."""
    scheduler = cls(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon", **kwargs)
    scheduler.set_timesteps(nfe)
    alphas_cumprod = scheduler.alphas_cumprod.double()
    x = scorer.noise.clone() * float(scheduler.init_noise_sigma)
    calls = 0
    for k in scheduler.timesteps:
        alpha, sigma = alphas_cumprod[int(k)].sqrt(), (1 - alphas_cumprod[int(k)]).sqrt()
        x0 = scorer.mix.exact_x0(x, alpha, sigma)
        calls += 1
        x = scheduler.step((x - alpha * x0) / sigma, k, x).prev_sample
    return x, calls


@pytest.fixture(scope="module")
def setup():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the oracle's tensors are small: one thread is faster
    cases: dict[str, tuple[Target, Scorer]] = {}

    def case(name: str) -> tuple[Target, Scorer]:
        if name not in cases:
            overrides, n = MIXTURES[name]
            target = load_target(ORACLE, overrides, Console(quiet=True))
            cases[name] = (target, Scorer(target, n))
        return cases[name]

    rows: list[dict[str, Any]] = []
    yield case, rows
    torch.set_num_threads(threads)
    if rows:
        write_report(rows, {name: scorer.floor for name, (_, scorer) in cases.items()})


def measure(case: Callable[[str], tuple[Target, Scorer]], mixture_name: str, nfe: int) -> list[dict[str, Any]]:
    target, scorer = case(mixture_name)
    rows: list[dict[str, Any]] = []
    best: dict[str, dict[str, Any]] = {}
    for label, cls, kwargs in diffusers_configs():
        try:
            x, calls = run_diffusers(cls, kwargs, nfe, scorer)
        except Exception:  # diffusers refuses some spacing x sigmas x NFE combinations (index errors)
            continue
        if not torch.isfinite(x).all():
            continue
        score = scorer(x)
        if label not in best or score["swd"] < best[label]["swd"]:
            options = ", ".join(f"{k}={v}" for k, v in kwargs.items() if k not in ("algorithm_type", "solver_type"))
            best[label] = {"who": f"diffusers {label}", "how": options, "nfe": calls, **score}
    rows.extend(best.values())
    for name in SAMPLERS:
        _, component, params = sampler_params(target, name)
        params = with_values(params, steps=steps_for_nfe(target, component, params, nfe))
        x, used = run_sampler(target, component, params, scorer.noise)
        rows.append({"who": f"sandbox {name}", "how": f"grid={params.grid}", "nfe": used, **scorer(x)})
        if name in TUNED:
            clock = time.perf_counter()
            tuned = tune_grid(target, nfe, sampler=name)
            x, used = run_sampler(target, component, with_values(params, grid=tuned.times), scorer.noise)
            how = f"tuned from {tuned.origin} ({time.perf_counter() - clock:.0f} s)"
            rows.append({"who": f"sandbox {name}", "how": how, "nfe": used, **scorer(x)})
    return [{"mixture": mixture_name, "budget": nfe, **row} for row in rows]


@pytest.mark.parametrize("nfe", BUDGETS)
@pytest.mark.parametrize("mixture_name", list(MIXTURES))
def test_error_against_peers(benchmark, setup, mixture_name, nfe):
    case, rows = setup
    found = benchmark.pedantic(measure, args=(case, mixture_name, nfe), rounds=1, iterations=1)
    assert all(row["nfe"] <= nfe for row in found) and all(row["swd"] < 10 for row in found)
    rows.extend(found)
    peers = [r["swd"] for r in found if r["who"].startswith("diffusers")]
    ours = [r["swd"] for r in found if r["who"].startswith("sandbox")]
    benchmark.extra_info.update(best_peer=min(peers, default=float("nan")), best_sandbox=min(ours))
    if nfe == 10 and peers:  # the goals README states: measured 2.1 (2-D) and 2.6 (64-D) times lower
        assert min(ours) * 1.5 <= min(peers), (min(ours), min(peers))
        at_5 = [
            r["swd"]
            for r in rows
            if r["mixture"] == mixture_name and r["budget"] == 5 and r["who"].startswith("sandbox")
        ]
        assert not at_5 or min(at_5) <= min(peers), (min(at_5), min(peers))  # 5 NFE: no worse than theirs at 10


def write_report(rows: list[dict[str, Any]], floors: dict[str, float]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / ".gitignore").write_text("*\n")
    lines = [
        "Sliced Wasserstein distance to 200,000 exact draws (x1000; coupled: to the exact flow from the same "
        "noise), `cosine` schedule, epsilon target, exact denoiser; `pytest benchmarks/test_bench_peers.py "
        "--benchmark-only`.",
        "",
    ]
    for name in MIXTURES:
        mine = [r for r in rows if r["mixture"] == name]
        if not mine:
            continue
        coupled = any("coupled" in r for r in mine)
        lines += [
            f"### {name} ({MIXTURES[name][1]:,} samples; floor, as many exact draws: {1000 * floors[name]:.1f})",
            "",
            "| NFE | who | how | actual NFE | SWD |" + (" coupled |" if coupled else ""),
            "| ---: | --- | --- | ---: | ---: |" + (" ---: |" if coupled else ""),
        ]
        for r in sorted(mine, key=lambda r: (r["budget"], r["swd"])):
            extra = f" {1000 * r['coupled']:.1f} |" if coupled else ""
            lines.append(f"| {r['budget']} | {r['who']} | {r['how']} | {r['nfe']} | {1000 * r['swd']:.1f} |{extra}")
        lines.append("")
        for budget in BUDGETS:
            at = [r for r in mine if r["budget"] == budget]
            peers = [r["swd"] for r in at if r["who"].startswith("diffusers")]
            ours = [r["swd"] for r in at if r["who"].startswith("sandbox")]
            if peers and ours:
                lines.append(
                    f"- NFE {budget}: best peer {1000 * min(peers):.1f}, best sandbox {1000 * min(ours):.1f}: "
                    f"{min(peers) / min(ours):.2f} times lower error"
                )
        lines.append("")
    (RESULTS / "peers.md").write_text("\n".join(lines))
