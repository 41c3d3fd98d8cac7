"""Where a training pass of the UNet spends its time: ``torch.profiler`` self time per operator, in ms per pass.

The pass is ``forward_backward`` of ``test_bench_training.py`` (the UNet of
``recipes/unet_cosine.yaml``, batch 16 of 3x32x32, epsilon MSE), with the C
allocator set as ``sandbox run`` sets it. ``--plain`` profiles it as it ran
before the CPU training paths: glibc's allocator defaults, ``nn.GroupNorm``'s
own backward and the fused attention kernel in training::

    python benchmarks/profile_training.py --threads 2
    python benchmarks/profile_training.py --threads 2 --plain
"""

from __future__ import annotations

import argparse

import test_bench_training as bench  # this folder: the script's own, first on sys.path
import torch
from sandbox_plugins.denoisers import layers
from torch import nn
from torch.profiler import ProfilerActivity, profile

from sandbox.engine.memory import keep_freed_memory

#: operators grouped as docs/benchmarks.md#training-step reports them
GROUPS = {
    "convolution backward": ["aten::convolution_backward"],
    "convolution forward": ["aten::mkldnn_convolution"],
    "attention: SDPA's flash kernel": [
        "aten::_scaled_dot_product_flash_attention_for_cpu",
        "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
    ],
    "attention: batched matmuls and softmax": ["aten::bmm", "aten::_softmax", "aten::_softmax_backward_data"],
    "linear layers": ["aten::mm", "aten::addmm"],
    "GroupNorm, PyTorch's kernels": ["aten::native_group_norm", "aten::native_group_norm_backward"],
    "GroupNorm's closed-form backward": ["aten::sum", "aten::addcmul", "aten::addcmul_"],
    "SiLU": ["aten::silu", "aten::silu_backward"],
    "dropout's random numbers": ["aten::uniform_"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--layout", choices=["channels-last", "nchw"], default="channels-last")
    parser.add_argument("--plain", action="store_true", help="as before the CPU training paths (module docstring)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    make = bench.networks()["sandbox `unet`"]
    assert not isinstance(make, str)
    net = make()
    if args.plain:
        for module in net.modules():
            if isinstance(module, nn.GroupNorm):
                module.__class__ = nn.GroupNorm
        layers.EXPLICIT_TOKENS = 0
    else:
        keep_freed_memory()
    layout = torch.channels_last if args.layout == "channels-last" else torch.contiguous_format
    step = bench.forward_backward(net, layout)
    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.passes):
            step()
    per_pass = {e.key: e.self_cpu_time_total / 1e3 / args.passes for e in prof.key_averages()}
    grouped = {name for names in GROUPS.values() for name in names}
    print("| operator | ms per pass |\n| --- | --- |")
    for label, names in GROUPS.items():
        print(f"| {label} | {sum(per_pass.get(n, 0.0) for n in names):.0f} |")
    rest = sum(t for name, t in per_pass.items() if name not in grouped and not name.startswith("autograd::"))
    print(f"| the rest | {rest:.0f} |\n| total | {sum(per_pass.values()):.0f} |")


if __name__ == "__main__":
    main()
