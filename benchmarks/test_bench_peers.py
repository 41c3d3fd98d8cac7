"""Sampling error at 5 to 50 NFE side by side with diffusers' DPM-Solver++ and UniPC, on exact mixture oracles.

Four mixtures whose exact denoiser ``E[x0 | x_t]`` is known (the ``gaussian_mixture`` dataset):

- ``2d``: 8 components of std 0.1 evenly on the unit circle, equal weights;
- ``64d``: 10 components of std 0.1, means uniform in ``[-1, 1]^64``;
- ``8d-uneven``: 4 components of std 0.05, 0.1, 0.2 and 0.4 with weights 0.4, 0.3, 0.2 and 0.1;
- ``image-4x4``: items shaped ``[1, 4, 4]``, 6 components of std 0.2, means uniform in ``[-2, 2]^16``.

Everything runs on one schedule, the ``cosine`` one (diffusers' ``squaredcos_cap_v2`` on T = 1000 steps; the
sandbox's time ``t`` is diffusers' timestep ``k`` as ``(k + 1) / T``), with the epsilon target, from one fixed
batch of 20,000 starting draws that no tuning sees. Two scores:

- ``flow``: the mean squared distance to the probability-flow ODE solved with 1,000 UniPC steps from the same
  noise, the exact sample each starting draw maps to, so it is the discretisation error alone;
- ``swd``: the sliced Wasserstein distance to 200,000 exact draws (as many exact draws as samples score the
  finite-sample floor). Near the floor it separates configurations by chance more than by error: at 50 NFE
  grids 5 times farther from the flow score lower. In 2-D the SWD to the flow ("coupled") is shown too.

- **Peers** (diffusers, when installed): ``DPMSolverMultistepScheduler`` (``dpmsolver++``, order 2 and 3) and
  ``UniPCMultistepScheduler`` (``bh2``, order 2 and 3), each on every ``timestep_spacing`` (linspace, leading,
  trailing) with its default sigmas and with ``use_lu_lambdas`` (DPM-Solver++, uniform in log-SNR) or
  ``use_karras_sigmas`` (UniPC); a configuration diffusers refuses is left out. The best configuration per
  scheduler and NFE, by either score, is the peers' row. k-diffusion is not installed: its DPM++(2M) is the built-in
  ``dpmpp_2m`` update (``tests/plugins/test_solvers.py``), so on k-diffusion's grids (``karras``, log-SNR
  uniform) it is the ``dpmpp_2m`` rows.
- **Sandbox**: each deterministic built-in on every registered grid, and on the grid ``sandbox tune-steps`` keeps
  for it (:func:`sandbox.tools.tune.tune_grid` with its defaults: 256 of the recipe's starting draws tuned on,
  1,024 held out, 32,768 to confirm on, none of them the evaluation noise).

Each mixture and NFE checks (:func:`verdicts`) that the sandbox's best configuration is at least as close to
the exact flow as the best peer configuration, and that each tuned grid is no farther from it than the
sampler's own grid. A mixture's error is dominated by the few samples that end in another component, a few in
20,000 draws (on ``image-4x4`` at 30 NFE, UniPC's own grid: 0 of the evaluation draws, 11 of 200,000 others), so
the checks score the configurations they compare again on :data:`VERDICT_DRAWS` other draws with their own
exact flow.

Writes ``peers.md`` into ``$SANDBOX_BENCH_RESULTS`` or ``benchmarks/results/``.

    pytest benchmarks/test_bench_peers.py --benchmark-only
"""

from __future__ import annotations

import math
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
    "8d-uneven": (                      # unequal weights and widths: a narrow heavy component, wide light ones
        ["dataset.dim=8", "dataset.components=4", "dataset.stds=[0.05,0.1,0.2,0.4]", "dataset.weights=[4,3,2,1]"],
        20_000,
    ),
    "image-4x4": (                      # items shaped [1, 4, 4], far-apart means
        ["dataset.image_shape=[1,4,4]", "dataset.components=6", "dataset.radius=2.0", "dataset.std=0.2"],
        20_000,
    ),
}
BUDGETS = (5, 10, 15, 20, 30, 50)       # NFE per sample
REFERENCE_DRAWS = 200_000               # exact draws the SWD compares against
FLOW_STEPS = 1000                       # UniPC steps of the exact flow from the evaluation noise
VERDICT_DRAWS = {                       # new draws the checks re-score the configurations they compare on
    "2d": 200_000, "64d": 40_000, "8d-uneven": 200_000, "image-4x4": 200_000,  # 64-D: 5 times the cost per draw
}
SAMPLERS = ("unipc", "dpmpp_3m", "dpmpp_2m", "ddim", "heun")
TUNED = ("unipc", "dpmpp_3m", "dpmpp_2m")
T = 1000
MARGIN = 2.0                            # paired standard errors a check allows on the verdict batch
# fmt: on


class Scorer:
    """SWD to a large exact draw, and the mean squared distance to the exact flow from the same noise."""

    def __init__(self, target: Target, n: int, verdict_draws: int):
        mix = mixture(target.recipe.components["dataset"][1])
        self.mix = mix
        self.exact = Reference(mix.sample(REFERENCE_DRAWS, torch.Generator().manual_seed(7)).reshape(-1, mix.dim))
        self.noise = torch.randn(n, *mix.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
        self.floor = self.exact.sliced_wasserstein(mix.sample(n, torch.Generator().manual_seed(8)).reshape(n, -1))
        _, component, params = sampler_params(target, "unipc")
        self.flow, _ = run_sampler(target, component, with_values(params, steps=FLOW_STEPS), self.noise)
        self.coupled = Reference(self.flow) if mix.dim == 2 else None
        self.target, self.component, self.params, self.verdict_draws = target, component, params, verdict_draws
        self._verdict: tuple[torch.Tensor, torch.Tensor] | None = None

    def verdict_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """:data:`VERDICT_DRAWS` other starting draws and their exact flow: the checks compare on these, since a
        mixture's error is dominated by samples that change component, a few in 20,000 draws."""
        if self._verdict is None:
            shape = self.noise.shape[1:]
            noise = torch.randn(
                self.verdict_draws, *shape, generator=torch.Generator().manual_seed(10), dtype=torch.float64
            )
            params = with_values(self.params, steps=FLOW_STEPS)
            self._verdict = (noise, run_sampler(self.target, self.component, params, noise)[0])
        return self._verdict

    def verdict_errors(self, run: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Each verdict draw's squared distance to the exact flow, of the configuration ``run`` maps noise with."""
        noise, flow = self.verdict_batch()
        return ((run(noise).reshape(flow.shape) - flow) ** 2).flatten(1).mean(1)

    def __call__(self, x: torch.Tensor) -> dict[str, float]:
        x = x.reshape(self.flow.shape)
        out = {
            "swd": self.exact.sliced_wasserstein(x.reshape(len(x), -1)),
            "flow": float(((x - self.flow) ** 2).mean()),
        }
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


def run_diffusers(
    cls: Any, kwargs: dict[str, Any], nfe: int, scorer: Scorer, noise: torch.Tensor | None = None
) -> tuple[torch.Tensor, int]:
    """diffusers' scheduler loop, the exact denoiser turned into the epsilon its model would predict."""
    scheduler = cls(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon", **kwargs)
    scheduler.set_timesteps(nfe)
    alphas_cumprod = scheduler.alphas_cumprod.double()
    x = (scorer.noise if noise is None else noise).clone() * float(scheduler.init_noise_sigma)
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
            cases[name] = (target, Scorer(target, n, VERDICT_DRAWS[name]))
        return cases[name]

    rows: list[dict[str, Any]] = []
    yield case, rows
    torch.set_num_threads(threads)
    if rows:
        write_report(rows, {name: scorer.floor for name, (_, scorer) in cases.items()})


def measure(case: Callable[[str], tuple[Target, Scorer]], mixture_name: str, nfe: int) -> list[dict[str, Any]]:
    target, scorer = case(mixture_name)
    rows: list[dict[str, Any]] = []
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for label, cls, kwargs in diffusers_configs():
        try:
            x, calls = run_diffusers(cls, kwargs, nfe, scorer)
        except Exception:  # diffusers refuses some spacing x sigmas x NFE combinations (index errors)
            continue
        if not torch.isfinite(x).all():
            continue
        score = scorer(x)
        options = ", ".join(f"{k}={v}" for k, v in kwargs.items() if k not in ("algorithm_type", "solver_type"))
        again = lambda noise, cls=cls, kwargs=kwargs: run_diffusers(cls, kwargs, nfe, scorer, noise)[0]
        row = {"who": f"diffusers {label}", "how": options, "nfe": calls, "kind": "peer", "run": again, **score}
        for metric in ("swd", "flow"):  # each peer's best configuration by either score
            if (label, metric) not in best or score[metric] < best[label, metric][metric]:
                best[label, metric] = row
    rows.extend({id(row): row for row in best.values()}.values())
    grids = list(target.registry.names("grid"))
    for name in SAMPLERS:
        _, component, params = sampler_params(target, name)
        params = with_values(params, steps=steps_for_nfe(target, component, params, nfe))
        own: dict[str, Any] = {}
        for grid in [params.grid, *[g for g in grids if g != params.grid]]:
            try:
                x, used = run_sampler(target, component, with_values(params, grid=grid), scorer.noise)
            except Exception:  # a grid with fewer points than the steps, or one for discrete schedules
                continue
            if used > nfe or not torch.isfinite(x).all():
                continue
            rerun = _rerun(target, component, with_values(params, grid=grid))
            row = {"who": f"sandbox {name}", "how": f"grid={grid}", "nfe": used, "kind": "untuned", "run": rerun}
            row.update(scorer(x))
            own = own or row  # the first: the sampler's own grid
            rows.append(row)
        if name in TUNED:
            clock = time.perf_counter()
            tuned = tune_grid(target, nfe, sampler=name)
            x, used = run_sampler(target, component, with_values(params, grid=tuned.times), scorer.noise)
            kept = "own grid kept" if tuned.kept_start else f"{tuned.chosen} from {tuned.origin}"
            how = f"tuned: {kept} ({tuned.evaluations} evaluations, {time.perf_counter() - clock:.0f} s)"
            rows.append(
                {
                    "who": f"sandbox {name}",
                    "how": how,
                    "nfe": used,
                    "kind": "tuned",
                    "run": _rerun(target, component, with_values(params, grid=tuned.times)),
                    "own": own,
                    **scorer(x),
                }
            )
    rescore(rows, scorer)
    return [{"mixture": mixture_name, "budget": nfe, **row} for row in rows]


def _rerun(target: Target, component: Any, params: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda noise: run_sampler(target, component, params, noise)[0]


def rescore(rows: list[dict[str, Any]], scorer: Scorer) -> None:
    """The configurations the checks compare, scored again on the verdict batch (``verdict``: the mean squared
    distance to the exact flow there, ``verdict_se`` its standard error): the best peer and the best sandbox
    configuration on the evaluation noise, and each tuned grid with its sampler's own grid."""
    compared = [r for r in rows if r["kind"] == "tuned"]
    compared += [r["own"] for r in compared]
    for kind in ("peer", "untuned"):
        compared += sorted((r for r in rows if r["kind"] == kind), key=lambda r: r["flow"])[:1]
    for row in compared:
        if "verdict" not in row:
            errors = scorer.verdict_errors(row["run"])
            row.update(verdict=float(errors.mean()), verdict_se=_se(errors), errors=errors)


def _se(values: torch.Tensor) -> float:
    return float(values.std()) / math.sqrt(len(values))


def _difference(a: dict[str, Any], b: dict[str, Any]) -> str:
    difference = a["errors"] - b["errors"]
    return f"{float(difference.mean()):+.1e} +- {_se(difference):.1e}"


def worse(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether ``a`` is farther from the exact flow than ``b`` on the verdict batch by more than :data:`MARGIN`
    standard errors of the per-draw difference (the same draws: what both get right cancels)."""
    difference = a["errors"] - b["errors"]
    return float(difference.mean()) > MARGIN * _se(difference)


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """What the benchmark promises, broken, on the verdict batch (:data:`VERDICT_DRAWS`, draws no tuning saw): the
    sandbox's best configuration farther from the exact flow than the best peer configuration, or a tuned grid
    farther from it than the sampler's own grid, each by more than :data:`MARGIN` paired standard errors (a
    difference of a few samples that change component among 200,000 is no difference of the grids)."""
    broken = []
    judged = [r for r in rows if "verdict" in r]
    peer = min((r for r in judged if r["kind"] == "peer"), key=lambda r: r["verdict"], default=None)
    ours = min((r for r in judged if r["kind"] != "peer"), key=lambda r: r["verdict"])
    if peer is not None and worse(ours, peer):
        broken.append(f"best sandbox {ours['verdict']:.3e} > best peer {peer['verdict']:.3e}")
    for r in judged:
        if r["kind"] == "tuned" and worse(r, r["own"]):
            broken.append(f"{r['who']} tuned {r['verdict']:.3e} > own grid {r['own']['verdict']:.3e}")
    return broken


@pytest.mark.parametrize("nfe", BUDGETS)
@pytest.mark.parametrize("mixture_name", list(MIXTURES))
def test_error_against_peers(benchmark, setup, mixture_name, nfe):
    case, rows = setup
    found = benchmark.pedantic(measure, args=(case, mixture_name, nfe), rounds=1, iterations=1)
    rows.extend(found)
    assert all(row["nfe"] <= nfe for row in found)
    peers = [r["swd"] for r in found if r["kind"] == "peer"]
    ours = [r["swd"] for r in found if r["kind"] != "peer"]
    benchmark.extra_info.update(best_peer=min(peers, default=float("nan")), best_sandbox=min(ours))
    assert not verdicts(found), verdicts(found)


def write_report(rows: list[dict[str, Any]], floors: dict[str, float]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / ".gitignore").write_text("*\n")
    lines = [
        "Sliced Wasserstein distance to 200,000 exact draws (x1000), `cosine` schedule, epsilon target, exact "
        "denoiser, the same evaluation noise for all, which no tuning saw; flow: mean squared distance to the "
        "exact flow from that noise (1,000 UniPC steps); coupled (2-D): SWD to it. "
        "`pytest benchmarks/test_bench_peers.py --benchmark-only`.",
        "",
        "Each cell: flow MSE / SWD x1000 of the configuration nearest the exact flow.",
        "",
        "The checks compare on other draws (200,000; 40,000 in 64-D; verdict: flow MSE, and in brackets the "
        "difference with its paired standard error): the best sandbox and peer configurations above, and each "
        "tuned grid with its sampler's own grid; a check is broken where the difference exceeds 2 standard errors.",
        "",
        "| mixture | NFE | sandbox, untuned best | sandbox, tuned (held-out noise) | best peer "
        "| lowest SWD, sandbox / peer | verdict: sandbox best / peer best | tuned / own (verdict) | broken |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for name in MIXTURES:
        for budget in BUDGETS:
            at = [r for r in rows if r["mixture"] == name and r["budget"] == budget]
            if not at:
                continue
            pick = {
                kind: min((r for r in at if r["kind"] == kind), key=lambda r: r["flow"], default=None)
                for kind in ("untuned", "tuned", "peer")
            }
            cells = [
                f"{r['flow']:.2e} / {1000 * r['swd']:.1f} ({r['who'].split()[-1]}"
                + (f", {r['how']})" if kind != "tuned" else ")")
                if r
                else "-"
                for kind, r in pick.items()
            ]
            swd_ours = min(r["swd"] for r in at if r["kind"] != "peer")
            swd_peer = min((r["swd"] for r in at if r["kind"] == "peer"), default=math.nan)
            judged = {
                side: min(
                    (r for r in at if (r["kind"] == "peer") == (side == "peer") and "verdict" in r),
                    key=lambda r: r["verdict"],
                    default=None,
                )
                for side in ("sandbox", "peer")
            }
            verdict = " / ".join(f"{r['verdict']:.3e}" if r else "-" for r in judged.values())
            if judged["sandbox"] and judged["peer"]:
                verdict += " (" + _difference(judged["sandbox"], judged["peer"]) + ")"
            tuned = "; ".join(
                f"{r['who'].split()[-1]} {r['verdict']:.3e} / {r['own']['verdict']:.3e} ({_difference(r, r['own'])})"
                for r in at
                if r["kind"] == "tuned"
            )
            lines.append(
                f"| {name} | {budget} | {' | '.join(cells)} | {1000 * swd_ours:.1f} / {1000 * swd_peer:.1f} "
                f"| {verdict} | {tuned} | {'; '.join(verdicts(at))} |"
            )
    lines.append("")
    for name in MIXTURES:
        mine = [r for r in rows if r["mixture"] == name]
        if not mine:
            continue
        coupled = any("coupled" in r for r in mine)
        lines += [
            f"### {name} ({MIXTURES[name][1]:,} samples; floor, as many exact draws: {1000 * floors[name]:.1f})",
            "",
            "| NFE | who | how | actual NFE | SWD | flow |" + (" coupled |" if coupled else ""),
            "| ---: | --- | --- | ---: | ---: | ---: |" + (" ---: |" if coupled else ""),
        ]
        for r in sorted(mine, key=lambda r: (r["budget"], r["swd"])):
            extra = f" {1000 * r['coupled']:.1f} |" if coupled else ""
            lines.append(
                f"| {r['budget']} | {r['who']} | {r['how']} | {r['nfe']} | {1000 * r['swd']:.1f} | {r['flow']:.2e} |"
                + extra
            )
        lines.append("")
    (RESULTS / "peers.md").write_text("\n".join(lines))
