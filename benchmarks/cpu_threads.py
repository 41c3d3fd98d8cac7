"""What each kind of CPU work gains from a second torch thread: the measurements behind ``run.threads: 0``.

Times a training step of the toy2d MLP and of the quickstart UNet, and DDIM-50 on 256 digits, at one and at
``--threads`` (default 2) torch threads, interleaved in rounds so a slow spell on a shared machine hits both
alike; prints items/s (the median of the rounds) and the ratio. Run it alone, then beside other work, and
compare (docs/benchmarks.md#cpu-threads):

    python benchmarks/cpu_threads.py [--threads 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from sandbox.engine.build import build_parts
from sandbox.engine.generate import generate
from sandbox.engine.precond import Preconditioned
from sandbox.engine.training import Trainer
from sandbox.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]


def training_step(recipe: str) -> tuple[Callable[[], object], int, int]:
    """One optimizer step of the recipe's network (20 per timing), and its batch size."""
    loaded = load_recipe(ROOT / "recipes" / recipe, ["run.device=cpu"])
    trainer = Trainer(loaded, build_parts(loaded), torch.device("cpu"), Path(tempfile.mkdtemp()))
    batches = trainer.batches()
    return (lambda: trainer.step(*next(batches))), loaded.train.batch_size, 20


def sampling(recipe: str, n: int = 256) -> tuple[Callable[[], object], int, int]:
    """The recipe's sampler on ``n`` items with its (untrained) network."""
    loaded = load_recipe(ROOT / "recipes" / recipe, ["run.device=cpu"])
    parts = build_parts(loaded)
    assert parts.net is not None
    model = Preconditioned(parts.net.eval(), parts.schedule, loaded.train.target)
    return (lambda: generate(loaded, parts, model, torch.device("cpu"), n, 0)), n, 1


CASES = {
    "toy2d MLP, training step": lambda: training_step("toy2d.yaml"),
    "quickstart UNet, training step": lambda: training_step("quickstart.yaml"),
    "DDIM-50 on 256 digits": lambda: sampling("quickstart.yaml"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="the thread count compared with one")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for name, make in CASES.items():
        work, items, repeats = make()
        speeds: dict[int, list[float]] = {1: [], args.threads: []}
        for _ in range(args.rounds):
            for threads in speeds:
                torch.set_num_threads(threads)
                work()  # warm-up at this count
                start = time.perf_counter()
                for _ in range(repeats):
                    work()
                speeds[threads].append(items * repeats / (time.perf_counter() - start))
        one, many = statistics.median(speeds[1]), statistics.median(speeds[args.threads])
        print(f"{name}: 1 thread {one:,.0f}/s, {args.threads} threads {many:,.0f}/s, ratio {many / one:.2f}")


if __name__ == "__main__":
    main()
