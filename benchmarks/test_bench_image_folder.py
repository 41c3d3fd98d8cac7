"""What the image_folder cache buys: decoding 10,000 small PNG files once, against reading the cache again.

Writes 10,000 PNG files of 40x30 RGB (a few kinds of content, so the encoder does real work) into a temporary
folder, then builds the ``image_folder`` dataset twice at resolution 32: the first build decodes every file
in worker processes (every usable core) into the memory-mapped uint8 cache, the second finds the cache by
its fingerprint and reads it. Recorded in ``extra_info``: files/s of the first build, the seconds of each,
and their ratio; asserted: the two builds give the same items, and the second is at least 20 times faster
than decoding (it reads one array instead of decoding 10,000 files).

    python -m pytest benchmarks/test_bench_image_folder.py --benchmark-only
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
from PIL import Image
from sandbox_plugins.datasets.image_folder import build
from sandbox_plugins.datasets.params import ImageFolderParams

from sandbox.protocols import first_tensor

FILES = 10_000
SIZE = (40, 30)  # width, height: the shorter side is resized to 32, then centre-cropped


def write_pngs(folder, n: int) -> None:
    rng = np.random.default_rng(0)
    gradient = np.linspace(0, 255, SIZE[0], dtype=np.uint8)[None, :, None].repeat(SIZE[1], 0).repeat(3, 2)
    for i in range(n):
        pixels = gradient.copy() if i % 2 else rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
        pixels[: 1 + i % SIZE[1]] //= 2  # no two files alike
        Image.fromarray(pixels).save(folder / f"{i:05d}.png")


@pytest.mark.benchmark(group="image_folder")
def test_cache_is_built_once_and_read_at_least_20_times_faster(benchmark, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    write_pngs(folder, FILES)
    params = ImageFolderParams(root=str(folder), resolution=32, channels=3, workers=0)

    def both():
        start = time.perf_counter()
        first = build(params)
        decoded = time.perf_counter() - start
        start = time.perf_counter()
        again = build(params)
        read = time.perf_counter() - start
        return first, again, decoded, read

    first, again, decoded, read = benchmark.pedantic(both, rounds=1, iterations=1)
    assert len(first.train) + len(first.val) == FILES
    for i in (0, 1, len(first.train) - 1):
        assert torch.equal(first_tensor(first.train[i]), first_tensor(again.train[i]))
    benchmark.extra_info.update(
        {
            "files": FILES,
            "cores": len(os.sched_getaffinity(0)),
            "decode_files_per_s": FILES / decoded,
            "decode_s": decoded,
            "cached_read_s": read,
            "cache_speedup": decoded / read,
        }
    )
    print(f"decode {FILES / decoded:,.0f} files/s ({decoded:.1f} s); cached read {read:.3f} s: {decoded / read:.0f}x")
    assert decoded / read >= 20, (decoded, read)
