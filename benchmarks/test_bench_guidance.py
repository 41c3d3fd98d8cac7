"""What classifier-free guidance costs: guided sampling's images/s, batched and in two passes, against unguided.

Configuration: the quickstart's class-conditional UNet (channels 32, channel_mult
[1, 2], one residual block per level, attention at 4x4, 8 groups, 10 classes)
with random weights, epsilon target on the cosine schedule, on 1x8x8
digits-shaped data; 256 samples per call (the classes in blocks, as
``sandbox run`` draws them) with DDIM in 10 steps, each through
:class:`sandbox.engine.condition.Conditions` and :func:`~sandbox.engine.condition.steer`
exactly as :func:`sandbox.engine.generate.generate` calls them. Three contenders:

* ``batched``: ``cfg`` with ``scale=2, batched=true``, both estimates from one
  forward pass on the doubled batch (two network evaluations per item, one call);
* ``two_pass``: the same guidance with ``batched=false``, two calls per step;
* ``unguided``: the conditional estimate alone (no ``guidance:`` section).

They alternate in rounds (:func:`harness.interleaved`'s scheme), so a slow
spell on a shared machine hits each alike; images/s is 256 over each one's
median seconds. Recorded in ``extra_info``: each one's images/s, the ratios
``batched / two_pass`` and ``batched / unguided``, and the NFE counts. Only
what cannot flake is asserted: the batched and two-pass samples agree to
float32 rounding, and the counts (20 evaluations per sample, 10 forwards per
batch batched, 20 in two passes, 10 unguided).

    python -m pytest benchmarks/test_bench_guidance.py --benchmark-only
"""

from __future__ import annotations

import statistics
import time

import harness
import pytest
import torch
from sandbox_plugins.denoisers.params import UNetParams
from sandbox_plugins.denoisers.unet import build
from sandbox_plugins.guidance.methods import ClassifierFree
from sandbox_plugins.guidance.params import CFGParams

from sandbox.engine.condition import Conditions, draw_labels, steer
from sandbox.engine.precond import Preconditioned
from sandbox.protocols import null_label
from sandbox.registry import get_registry
from sandbox.sampling import CountingDenoise

REGISTRY = get_registry()
CLASSES = 10
BATCH = 256
STEPS = 10
ROUNDS = 3
#: the quickstart recipe's denoiser
QUICKSTART = UNetParams(
    channels=32, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[4], dropout=0.0, groups=8
)
CONTENDERS = {
    "batched": ClassifierFree(CFGParams(scale=2, batched=True)),
    "two_pass": ClassifierFree(CFGParams(scale=2, batched=False)),
    "unguided": None,
}


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    net = build(QUICKSTART, (1, 8, 8), num_classes=CLASSES).eval()
    schedule = REGISTRY.get("schedule", "cosine").build()
    component = REGISTRY.get("sampler", "ddim")
    params = component.default_params()
    params.steps = STEPS
    return Preconditioned(net, schedule, "epsilon"), schedule, component.build(params)


@pytest.fixture
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2], indirect=True, ids=lambda n: f"threads={n}")
def test_guided_sampling_throughput(benchmark, setup, threads):
    model, schedule, sampler = setup
    noise = torch.randn(BATCH, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = draw_labels(BATCH, list(range(CLASSES)))
    seconds: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    last: dict[str, tuple[torch.Tensor, Conditions, int]] = {}

    @torch.no_grad()
    def draw(name: str) -> None:
        conditions = Conditions(model, labels, null_label(CLASSES), schedule)
        counter = CountingDenoise(steer(CONTENDERS[name], conditions))
        start = time.perf_counter()
        out = sampler(counter, noise, schedule, generator=torch.Generator().manual_seed(1))
        seconds[name].append(time.perf_counter() - start)
        last[name] = out, conditions, counter.nfe

    def one_round() -> None:  # every contender once, in turn
        for name in CONTENDERS:
            draw(name)

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1, warmup_rounds=1)

    images_per_s = {name: BATCH / statistics.median(times[-ROUNDS:]) for name, times in seconds.items()}
    (batched, cond_b, calls_b), (two_pass, cond_t, calls_t) = last["batched"], last["two_pass"]
    _, cond_u, calls_u = last["unguided"]
    benchmark.extra_info.update(
        threads=threads,
        machine=harness.machine(),
        images_per_s={name: round(v, 1) for name, v in images_per_s.items()},
        batched_over_two_pass=images_per_s["batched"] / images_per_s["two_pass"],
        batched_over_unguided=images_per_s["batched"] / images_per_s["unguided"],
        two_pass_over_unguided=images_per_s["two_pass"] / images_per_s["unguided"],
        max_abs_diff_batched_two_pass=float((batched - two_pass).abs().max()),
        nfe_per_sample={"batched": cond_b.evaluations, "two_pass": cond_t.evaluations, "unguided": cond_u.evaluations},
        forwards_per_batch={"batched": cond_b.forwards, "two_pass": cond_t.forwards, "unguided": cond_u.forwards},
    )
    torch.testing.assert_close(batched, two_pass, rtol=1e-5, atol=1e-5)
    assert calls_b == calls_t == calls_u == STEPS  # the sampler's own calls, guidance aside
    assert (cond_b.evaluations, cond_b.forwards) == (2 * STEPS, STEPS)
    assert (cond_t.evaluations, cond_t.forwards) == (2 * STEPS, 2 * STEPS)
    assert (cond_u.evaluations, cond_u.forwards) == (STEPS, STEPS)
