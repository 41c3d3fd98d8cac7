"""Training speed, side by side in one process: the sandbox's training step against a bare PyTorch loop, and the
training FLOP utilisation of the sandbox UNet against diffusers' and denoising-diffusion-pytorch's.

Both measurements alternate their contenders in rounds and take medians, so a
slow spell on a shared machine hits every contender alike.

* ``test_trainer_overhead``: ``Trainer.step`` of a trainer built from a
  shipped recipe exactly as ``sandbox run`` builds it (``load_recipe``,
  ``build_parts``, ``Trainer``), fed by its own batch source, against
  :class:`harness.BareLoop` (epsilon MSE, the same fused AdamW, gradient
  clipping and EMA) on a copy of the same network, in the same memory format,
  on batches of the same stored images. Overhead is the median over rounds of
  the per-round time ratio, minus one.
* ``test_flop_utilisation``: FLOPs of one forward and backward pass counted by
  ``torch.utils.flop_counter`` (attention counted as its matmuls), divided by
  the measured time of that pass and by the FLOP/s of a 2048 x 2048 fp32
  matmul measured just before it; the median over passes. The networks are matched: the sandbox
  UNet of ``recipes/unet_cosine.yaml`` (channels 64, channel_mult [1, 2, 2],
  two residual blocks per level, attention at 16x16, dropout 0.1), diffusers'
  ``UNet2DModel`` in the same layout (same 6,472,195 parameters) and
  denoising-diffusion-pytorch's ``Unet(dim=64, dim_mults=(1, 2, 2))``; each in
  PyTorch's default layout and in channels-last. Peers that are not installed
  (``pip install -e ".[bench]"``) are reported as such.

Both run with the C allocator set as ``sandbox run`` sets it
(:mod:`sandbox.engine.memory`), which holds for every contender in the process.

Writes ``training.md`` into ``$SANDBOX_BENCH_RESULTS`` or ``benchmarks/results/``:

    python -m pytest benchmarks/test_bench_training.py --benchmark-only
"""

from __future__ import annotations

import copy
import importlib.util
import tempfile
from collections.abc import Callable
from pathlib import Path

import harness
import pytest
import torch
import torch.nn.functional as F
from sandbox_plugins.denoisers.params import UNetParams

from sandbox.engine.build import Parts, build_parts
from sandbox.engine.memory import keep_freed_memory
from sandbox.engine.training import Trainer
from sandbox.recipe import load_recipe
from sandbox.registry import get_registry

RECIPES = harness.ROOT / "recipes"
FLOP_BATCH = 16  # images of 3x32x32 per forward and backward pass
FLOP_ROUNDS = 7
#: recipes/unet_cosine.yaml's denoiser
UNET_COSINE = UNetParams(
    channels=64, channel_mult=[1, 2, 2], num_res_blocks=2, attention_resolutions=[16], dropout=0.1
)
#: recipe file, overrides, rounds; the data are the recipe's own (digits) or synthetic CIFAR-10 files; the
#: bare loop's target is epsilon, so the quickstart (v) is measured with epsilon too
OVERHEAD_CASES = {
    "quickstart": ("quickstart.yaml", ["train.target=epsilon"], 30),
    "unet_cosine": ("unet_cosine.yaml", ["train.batch_size=8"], 12),
}


@pytest.fixture(scope="module", autouse=True)
def allocator():
    """The C allocator set as ``sandbox run`` sets it (:func:`sandbox.engine.memory.keep_freed_memory`): process-wide,
    so the bare loop and the peers run with it too."""
    keep_freed_memory()


@pytest.fixture(scope="module")
def report():
    """Sections of ``training.md``, written when the module's benchmarks are done."""
    sections: dict[str, list[str]] = {}
    yield sections
    if sections:
        harness.RESULTS.mkdir(parents=True, exist_ok=True)
        lines = ["# Training speed", "", f"Machine: {harness.machine()}.", ""]
        for name in ("overhead", "flops"):
            lines += [*sections.get(name, []), ""] if name in sections else []
        (harness.RESULTS / "training.md").write_text("\n".join(lines))


# --- (a) the sandbox's training step against a bare loop ----------------------------------------


def build_trainer(recipe_file: str, overrides: list[str], folder: Path) -> tuple[Trainer, Parts]:
    """A Trainer built as ``sandbox run`` builds it (``prepare`` and ``train`` of sandbox/run.py), on the CPU."""
    extra = ["run.device=cpu", "run.workers=0", f"run.output={folder / 'runs'}"]
    if recipe_file == "unet_cosine.yaml":
        root = harness.fake_cifar10(folder / "cifar10", per_batch=200)
        extra += [f"dataset.root={root}", "dataset.verify=false", "dataset.val_size=100"]
    recipe = load_recipe(RECIPES / recipe_file, [*overrides, *extra])
    torch.manual_seed(recipe.run.seed)
    parts = build_parts(recipe)
    run_dir = folder / "run"
    run_dir.mkdir()
    return Trainer(recipe, parts, torch.device("cpu"), run_dir), parts


@pytest.mark.benchmark(group="training-overhead")
@pytest.mark.parametrize("case", list(OVERHEAD_CASES))
def test_trainer_overhead(benchmark, report, case):
    recipe_file, overrides, rounds = OVERHEAD_CASES[case]
    with tempfile.TemporaryDirectory() as tmp:
        trainer, parts = build_trainer(recipe_file, overrides, Path(tmp))
        cfg, split = trainer.cfg, parts.data.train
        bare = harness.BareLoop(
            copy.deepcopy(trainer.net), lr=cfg.lr, grad_clip=cfg.grad_clip, ema_decay=cfg.ema_decay, fused=True
        )
        sandbox_batches = trainer.batches()
        bare_batches = harness.stored_batches(split.stored(), cfg.batch_size, flip=getattr(split, "flip", False))
        memory_format = trainer.memory_format
        contenders: dict[str, Callable[[], object]] = {
            "sandbox": lambda: trainer.step(*next(sandbox_batches)),
            "bare": lambda: bare.step(next(bare_batches).contiguous(memory_format=memory_format)),
        }
        times = benchmark.pedantic(harness.interleaved, (contenders, rounds), rounds=1, iterations=1)
    ratio = harness.median([s / b for s, b in zip(times["sandbox"], times["bare"])])
    best_ratio = min(times["sandbox"]) / min(times["bare"])
    sandbox_s, bare_s = harness.median(times["sandbox"]), harness.median(times["bare"])
    benchmark.extra_info.update(case=case, sandbox_s=sandbox_s, bare_s=bare_s, overhead=ratio - 1)
    print(f"\n{case}: sandbox {sandbox_s * 1e3:.1f} ms, bare {bare_s * 1e3:.1f} ms, overhead {(ratio - 1):+.1%}")
    rows = report.setdefault("overhead", [])
    if not rows:
        rows += [
            "## The sandbox's training step against a bare PyTorch loop",
            "",
            "`Trainer.step` of a trainer built from the recipe as `sandbox run` builds it, fed by its own "
            "batch source, against the same step written directly in PyTorch (epsilon MSE, fused AdamW, "
            "gradient clipping, EMA) on a copy of the same network, in the same memory format, on batches of "
            "the same stored images. fp32 on the CPU; the contenders alternate in rounds; overhead is the "
            "median of the per-round time ratios, minus one (goal: at most 3%), and the ratio of the fastest "
            f"rounds, minus one, which other work on the machine disturbs least. Load average at the start: "
            f"{harness.load_average()}.",
            "",
            "| recipe | data | batch | rounds | sandbox step (ms, median) | bare step (ms, median) | overhead "
            "(median ratio) | overhead (fastest rounds) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
    data = "synthetic CIFAR-10 files" if recipe_file == "unet_cosine.yaml" else "its own"
    rows.append(
        f"| `{recipe_file}` | {data} | {cfg.batch_size} | {rounds} | {sandbox_s * 1e3:.1f} | {bare_s * 1e3:.1f} "
        f"| {ratio - 1:+.1%} | {best_ratio - 1:+.1%} |"
    )
    assert len(times["sandbox"]) == len(times["bare"]) == rounds


# --- (b) training FLOP utilisation --------------------------------------------------------------


def networks() -> dict[str, Callable[[], torch.nn.Module] | str]:
    """The matched networks; a peer that is not installed is the reason instead."""
    nets: dict[str, Callable[[], torch.nn.Module] | str] = {
        "sandbox `unet`": lambda: get_registry().get("denoiser", "unet").build(UNET_COSINE, (3, 32, 32)),
    }
    missing = 'not installed (pip install -e ".[bench]")'
    nets["diffusers `UNet2DModel`"] = (
        (lambda: harness.Adapter(harness.diffusers_unet((64, 128, 128), attention_level=1, dropout=0.1)))
        if importlib.util.find_spec("diffusers")
        else missing
    )
    nets["denoising-diffusion-pytorch `Unet`"] = (
        (lambda: harness.ddpm_pytorch_unet(64, (1, 2, 2), dropout=0.1))
        if importlib.util.find_spec("denoising_diffusion_pytorch")
        else missing
    )
    return nets


def forward_backward(net: torch.nn.Module, memory_format: torch.memory_format) -> Callable[[], None]:
    """One forward and backward pass of the epsilon MSE on a fixed batch of ``FLOP_BATCH`` 3x32x32 images."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(FLOP_BATCH, 3, 32, 32, generator=g).contiguous(memory_format=memory_format)
    eps = torch.randn(FLOP_BATCH, 3, 32, 32, generator=g)
    t = torch.randint(0, 1000, (FLOP_BATCH,), generator=g).float()
    net = net.train().to(memory_format=memory_format)

    def step() -> None:
        net.zero_grad(set_to_none=True)
        F.mse_loss(net(x, t), eps).backward()

    return step


@pytest.mark.benchmark(group="training-flop-utilisation")
def test_flop_utilisation(benchmark, report):
    torch.manual_seed(0)
    contenders, flops, params, skipped = {}, {}, {}, []
    for name, make in networks().items():
        if isinstance(make, str):
            skipped.append(f"| {name} | - | - | - | - | - | - | {make} |")
            continue
        net = make()
        params[name] = sum(p.numel() for p in net.parameters())
        for layout, memory_format in (("NCHW", torch.contiguous_format), ("channels-last", torch.channels_last)):
            step = forward_backward(copy.deepcopy(net), memory_format)
            flops[name, layout] = harness.training_flops(step)
            contenders[name, layout] = step
    peaks: dict[tuple[str, str], list[float]] = {key: [] for key in contenders}
    times = benchmark.pedantic(
        harness.interleaved,
        (contenders, FLOP_ROUNDS),
        {"before_call": lambda key: peaks[key].append(harness.matmul_peak())},
        rounds=1,
        iterations=1,
    )
    every_peak = [p for ps in peaks.values() for p in ps]
    rows = [
        "## Training FLOP utilisation",
        "",
        f"One forward and backward pass (epsilon MSE) on a batch of {FLOP_BATCH} 3x32x32 images, fp32 on the "
        "CPU. FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` (attention as its matmuls, on "
        "SDPA's math backend); a pass's utilisation is its FLOPs / (its time x the matmul peak measured just "
        "before it), the peak being the fastest of three 2048 x 2048 fp32 matmuls "
        f"({harness.median(every_peak) / 1e9:.0f} GFLOP/s, median of {len(every_peak)}; fastest "
        f"{max(every_peak) / 1e9:.0f}), so that a slow spell on the machine slows both alike. The table gives "
        f"the median pass time and the median and best utilisation of {FLOP_ROUNDS} passes per network, "
        f"contenders interleaved; load average at the end: {harness.load_average()}.",
        "",
        "| network | parameters | layout | GFLOP per pass | median ms | fastest ms | utilisation (median) "
        "| utilisation (best) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (name, layout), step_times in times.items():
        fl = flops[name, layout]
        per_pass = [fl / (t * peak) for t, peak in zip(step_times, peaks[name, layout])]
        utilisation, best = harness.median(per_pass), max(per_pass)
        t = harness.median(step_times)
        benchmark.extra_info[f"{name} {layout}"] = utilisation
        rows.append(
            f"| {name} | {params[name]:,} | {layout} | {fl / 1e9:.1f} | {t * 1e3:.0f} | {min(step_times) * 1e3:.0f} "
            f"| {utilisation:.1%} | {best:.1%} |"
        )
        print(f"\n{name} {layout}: {fl / 1e9:.1f} GFLOP, {t * 1e3:.0f} ms, {utilisation:.1%} (best {best:.1%})")
    report["flops"] = rows + skipped
    assert min(every_peak) > 0 and all(fl > 0 for fl in flops.values())
