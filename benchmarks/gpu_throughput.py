"""Training throughput (img/s) of the DDPM CIFAR-10 configuration on one device, synthetic data.

The sandbox's ``Trainer`` runs ``recipes/ddpm_cifar10.yaml`` (the 35.7M-parameter
UNet of Ho et al. 2020, batch 128) on synthetic CIFAR-10 files, with each of
``run.precision`` / ``run.compile`` in ``--modes``; next to it, diffusers'
``UNet2DModel`` in google/ddpm-cifar10-32's configuration (the same
35,746,307 parameters) trains in a bare loop (:class:`harness.BareLoop`:
epsilon MSE, fused AdamW, gradient clipping, EMA) in bf16, eager and compiled.
Each contender runs ``--warmup`` untimed steps (compilation happens there), then
``--steps`` timed ones; the table goes to stdout and ``gpu.md`` in the results folder.

    python benchmarks/gpu_throughput.py                 # CUDA (benchmarks/gpu.sh installs what is missing)
    python benchmarks/gpu_throughput.py --device cpu --steps 2 --warmup 1 --batch 4 --channels 32 --modes fp32
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
import torch

#: mode -> (run.precision, run.compile)
MODES = {"fp32": ("fp32", False), "bf16": ("bf16", False), "bf16+compile": ("bf16", True)}
PEER_MODES = {"bf16": False, "bf16+compile": True}  # diffusers' bare loop: mode -> compiled


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (a dry run); default cuda")
    parser.add_argument("--batch", type=int, default=128, help="images per step (default 128, DDPM's)")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per contender (default 50)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first, compilation included")
    parser.add_argument("--channels", type=int, default=128, help="base width (default 128, DDPM's)")
    parser.add_argument("--modes", default="fp32,bf16,bf16+compile", help=f"sandbox modes of {', '.join(MODES)}")
    parser.add_argument(
        "--peer-modes", default="bf16,bf16+compile", help=f"diffusers modes of {', '.join(PEER_MODES)}, or none"
    )
    parser.add_argument("--images", type=int, default=5000, help="synthetic training images (default 5,000)")
    args = parser.parse_args(argv)
    args.modes = [m for m in args.modes.split(",") if m]
    args.peer_modes = [m for m in args.peer_modes.split(",") if m and m != "none"]
    for mode in args.modes:
        if mode not in MODES:
            parser.error(f"--modes: {mode!r} is not one of {', '.join(MODES)}")
    for mode in args.peer_modes:
        if mode not in PEER_MODES:
            parser.error(f"--peer-modes: {mode!r} is not one of {', '.join(PEER_MODES)}")
    for key in ("batch", "steps", "channels", "images"):
        if getattr(args, key) < 1:
            parser.error(f"--{key} must be at least 1")
    return args


def device_of(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            f"--device {name}: this machine has no CUDA device (torch {torch.__version__}, "
            f"built with CUDA {torch.version.cuda}); run it on a GPU machine, or dry-run with --device cpu"
        )
    return device


def timed(step: Callable[[], object], device: torch.device, warmup: int, steps: int) -> float:
    """Seconds per step over ``steps`` steps after ``warmup`` untimed ones, waiting for the device at both ends."""
    for _ in range(warmup):
        step()
    harness.sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    harness.sync(device)
    return (time.perf_counter() - start) / steps


def sandbox_step(args: argparse.Namespace, device: torch.device, folder: Path, mode: str) -> Callable[[], object]:
    """``Trainer.step`` on the trainer's own batches, for recipes/ddpm_cifar10.yaml in ``mode``."""
    from sandbox.engine.build import build_parts
    from sandbox.engine.training import Trainer
    from sandbox.recipe import load_recipe

    precision, compile_ = MODES[mode]
    per_batch = -(-(args.images + 100) // 5)
    root = folder / "cifar10"
    if not root.exists():
        harness.fake_cifar10(root, per_batch=per_batch)
    channels = args.channels
    recipe = load_recipe(
        harness.ROOT / "recipes" / "ddpm_cifar10.yaml",
        [
            f"dataset.root={root}",
            "dataset.verify=false",
            "dataset.val_size=100",
            f"denoiser.channels={channels}",
            f"train.batch_size={args.batch}",
            f"run.device={device}",
            "run.workers=0",
            f"run.precision={precision}",
            f"run.compile={str(compile_).lower()}",
            f"run.output={folder / 'runs'}",
        ],
    )
    torch.manual_seed(recipe.run.seed)
    parts = build_parts(recipe)
    run_dir = folder / f"run-{mode}"
    run_dir.mkdir()
    trainer = Trainer(recipe, parts, device, run_dir)
    batches = trainer.batches()
    return lambda: trainer.step(*next(batches))


def diffusers_step(args: argparse.Namespace, device: torch.device, mode: str) -> Callable[[], object]:
    """A bare bf16 loop on diffusers' UNet2DModel of google/ddpm-cifar10-32's configuration."""
    c = args.channels
    net = harness.diffusers_unet((c, 2 * c, 2 * c, 2 * c), attention_level=1, dropout=0.1).to(device).train()
    model: torch.nn.Module = torch.compile(net) if PEER_MODES[mode] else net  # type: ignore[assignment]
    loop = harness.BareLoop(
        net, lr=2e-4, grad_clip=1.0, ema_decay=0.9999, precision="bf16", call=lambda _, x, t: model(x, t).sample
    )
    images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, device=device)
    batches = harness.stored_batches(images, args.batch, flip=True)
    return lambda: loop.step(next(batches))


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    device = device_of(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # what fp32 training on tensor cores uses (and diffusers')
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    print(f"device: {harness.machine(device)}")
    print(f"DDPM CIFAR-10 UNet (channels {args.channels}), batch {args.batch}, {args.warmup} + {args.steps} steps")
    rows: list[tuple[str, str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes:
            seconds = timed(sandbox_step(args, device, Path(tmp), mode), device, args.warmup, args.steps)
            rows.append(("sandbox Trainer", mode, args.batch / seconds))
            print(f"  sandbox Trainer   {mode:<13} {args.batch / seconds:10.1f} img/s", flush=True)
    if args.peer_modes and importlib.util.find_spec("diffusers") is None:
        print("  diffusers: not installed (benchmarks/gpu.sh installs it from benchmarks/wheels/)")
    elif args.peer_modes:
        for mode in args.peer_modes:
            seconds = timed(diffusers_step(args, device, mode), device, args.warmup, args.steps)
            rows.append(("diffusers UNet2DModel, bare loop", mode, args.batch / seconds))
            print(f"  diffusers bare    {mode:<13} {args.batch / seconds:10.1f} img/s", flush=True)
    write_report(args, device, rows)
    return 0


def write_report(args: argparse.Namespace, device: torch.device, rows: list[tuple[str, str, float]]) -> None:
    lines = [
        "# Training throughput on one device",
        "",
        f"Device: {harness.machine(device)}.",
        f"DDPM CIFAR-10 UNet (channels {args.channels}, 35,746,307 parameters at 128), batch {args.batch} of "
        f"synthetic 3x32x32 images; {args.warmup} untimed then {args.steps} timed steps per row.",
        "",
        "| trainer | mode | img/s |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {who} | {mode} | {rate:.1f} |" for who, mode, rate in rows]
    best = {who: max(rate for w, _, rate in rows if w == who) for who, _, _ in rows}
    if len(best) == 2:
        ours, theirs = best.values()
        lines += ["", f"Best sandbox / best diffusers: {ours / theirs:.2f}x."]
        print(f"best sandbox / best diffusers: {ours / theirs:.2f}x")
    harness.RESULTS.mkdir(parents=True, exist_ok=True)
    (harness.RESULTS / ("gpu.md" if device.type == "cuda" else "gpu-dry-run.md")).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
