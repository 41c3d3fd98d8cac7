"""The C allocator keeps what a step frees: a tensor allocated again after it was freed faults no pages in.

Each case runs in a fresh interpreter (the setting is process-wide and lasts
until the process exits) and counts the minor page faults of allocating,
writing and freeing the same 64 MiB tensor, in the median of ten rounds after ten that may fault (the
heap grows by a block at a time until freed blocks fit the next request).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sandbox.engine import memory

ROUNDS = 10
PROGRAM = f"""
import json, resource, sys, torch
from sandbox.engine.memory import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
for _ in range({ROUNDS}):
    torch.ones(16 * 2**20).sum()  # the heap grows until its freed blocks fit the request
faults = []
for _ in range({ROUNDS}):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 * 2**20).sum()  # 64 MiB of float32, written, read and freed
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({{"kept": kept, "faults": sorted(faults)[{ROUNDS} // 2]}}))
"""


def faults(mode: str) -> dict:
    """Whether the setting was made, and the median minor page faults of a round."""
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux only")
def test_freed_memory_is_reused_without_page_faults():
    plain, kept = faults("plain"), faults("keep")
    if not kept["kept"]:
        pytest.skip("not glibc: keep_freed_memory does nothing here")
    # glibc's default maps a 64 MiB block afresh each time: at least one fault per 2 MiB huge page
    assert plain["faults"] >= 32
    assert kept["faults"] * 100 < plain["faults"]  # the median round (a round may still grow the heap once)


def test_does_nothing_off_linux(monkeypatch):
    monkeypatch.setattr(memory.sys, "platform", "darwin")
    assert memory.keep_freed_memory() is False
