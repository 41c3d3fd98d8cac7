"""What the training benchmarks share: synthetic CIFAR-10 files, the peer networks, a bare PyTorch training
loop, FLOP counting, a matmul peak, interleaved timing and a description of the machine.

Imported by ``benchmarks/test_bench_training.py`` and ``benchmarks/gpu_throughput.py``
(both put this folder on ``sys.path``). Nothing here downloads anything.
"""

from __future__ import annotations

import math
import os
import pickle
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("SANDBOX_BENCH_RESULTS", Path(__file__).parent / "results"))

# --- data ---------------------------------------------------------------------------------------


def fake_cifar10(root: Path, per_batch: int = 1000, seed: int = 0) -> Path:
    """Random 32x32 RGB images in CIFAR-10's on-disk format (five training pickles, a test pickle and
    ``batches.meta``, as torchvision reads them); load with ``dataset.verify=false``. Returns ``root``."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {
            "batch_label": name,
            "labels": [int(v) for v in rng.integers(0, 10, size=per_batch)],
            "data": rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8),
            "filenames": [f"{name}_{i}.png" for i in range(per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}, protocol=2))
    return Path(root)


# --- the peers ----------------------------------------------------------------------------------


def diffusers_unet(block_out_channels: tuple[int, ...], attention_level: int, dropout: float) -> torch.nn.Module:
    """diffusers' ``UNet2DModel`` in the DDPM layout (google/ddpm-cifar10-32's config): two residual blocks per
    level, self-attention at level ``attention_level`` and in the middle, 32 GroupNorm groups, eps 1e-6."""
    from diffusers import UNet2DModel

    levels = len(block_out_channels)
    down = tuple("AttnDownBlock2D" if i == attention_level else "DownBlock2D" for i in range(levels))
    up = tuple("AttnUpBlock2D" if levels - 1 - i == attention_level else "UpBlock2D" for i in range(levels))
    return UNet2DModel(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=block_out_channels,
        layers_per_block=2,
        down_block_types=down,
        up_block_types=up,
        attention_head_dim=None,  # one head over all channels, as DDPM
        dropout=dropout,
        norm_eps=1e-6,
        downsample_padding=0,
        resnet_time_scale_shift="default",
        flip_sin_to_cos=False,
        freq_shift=1,
    )


def ddpm_pytorch_unet(dim: int, dim_mults: tuple[int, ...], dropout: float) -> torch.nn.Module:
    """denoising-diffusion-pytorch's ``Unet(dim, dim_mults)`` (lucidrains), its other settings at their defaults."""
    from denoising_diffusion_pytorch import Unet

    return Unet(dim=dim, dim_mults=dim_mults, dropout=dropout)


class Adapter(torch.nn.Module):
    """A peer network called as ``net(x, t) -> tensor`` (diffusers returns an output object)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.net(x, t)
        return out.sample if hasattr(out, "sample") else out


# --- a bare training loop -----------------------------------------------------------------------


def cosine_alpha_bar(steps: int = 1000, s: float = 0.008) -> torch.Tensor:
    """``alpha_bar(t) = cos^2((t / T + s) / (1 + s) pi / 2)`` normalised at 0 (Nichol & Dhariwal 2021, eq. 17)."""
    t = torch.arange(steps + 1, dtype=torch.float64) / steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return (f / f[0]).clamp(min=1e-5)[1:].float()


@dataclass
class BareLoop:
    """The DDPM training step written directly in PyTorch, with nothing else around it.

    epsilon-prediction MSE (Ho et al. 2020, algorithm 1) on ``x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar)
    eps`` with integer t, AdamW, gradient clipping at ``grad_clip``, and an EMA of the weights updated with
    ``torch._foreach_lerp_``; bf16 or fp16 autocast when asked. ``net(x, t)`` takes t as a float tensor.
    """

    net: torch.nn.Module
    lr: float = 2e-4
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    precision: str = "fp32"
    fused: bool = True
    call: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    alpha_bar: torch.Tensor = field(default_factory=cosine_alpha_bar)

    def __post_init__(self) -> None:
        device = next(self.net.parameters()).device
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=self.lr, fused=self.fused)
        self.ema = [p.detach().clone() for p in self.params]
        self.alpha_bar = self.alpha_bar.to(device)
        dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]
        self.dtype, self.device_type = dtype, device.type
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "fp16")

    def step(self, x0: torch.Tensor) -> torch.Tensor:
        B = x0.shape[0]
        t = torch.randint(0, len(self.alpha_bar), (B,), device=x0.device)
        eps = torch.randn_like(x0)
        a = self.alpha_bar[t].view(B, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
        with torch.autocast(self.device_type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            out = self.call(self.net, x_t, t) if self.call else self.net(x_t, t.float())
            loss = F.mse_loss(out.float(), eps)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        with torch.no_grad():
            torch._foreach_lerp_(self.ema, self.params, 1 - self.ema_decay)
        return loss.detach()


def stored_batches(items: torch.Tensor, batch: int, flip: bool = False) -> Iterator[torch.Tensor]:
    """Endless shuffled batches of stored items: uint8 images (N, C, H, W) are scaled to [-1, 1] and, with
    ``flip``, mirrored left-right with probability 1/2; float items are used as they are."""
    n = len(items)
    while True:
        order = torch.randperm(n, device=items.device)
        for i in range(0, n - batch + 1, batch):
            x = items[order[i : i + batch]]
            if x.dtype == torch.uint8:
                x = x.float().div_(127.5).sub_(1.0)
            if flip:
                mirrored = torch.rand(batch, 1, 1, 1, device=x.device) < 0.5
                x = torch.where(mirrored, x.flip(-1), x)
            yield x


# --- measuring ----------------------------------------------------------------------------------


def training_flops(step: Callable[[], Any]) -> int:
    """FLOPs of one call of ``step`` (forward and backward) by :class:`torch.utils.flop_counter.FlopCounterMode`.

    The attention runs on SDPA's math backend while counting, so every network's attention is counted as the
    same batched matmuls (the counter has no formula for the fused CPU kernel); timing uses the fused kernels.
    """
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def matmul_peak(device: torch.device | str = "cpu", n: int = 2048, repeats: int = 3) -> float:
    """FLOP/s of the fastest of ``repeats`` fp32 ``n x n`` matmuls on ``device``, after one warm-up."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = math.inf
    for _ in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved(
    contenders: dict[Any, Callable[[], Any]],
    rounds: int,
    warmup: int = 1,
    before_call: Callable[[Any], Any] | None = None,
) -> dict[Any, list[float]]:
    """Seconds per call of each contender, measured in ``rounds`` rounds that call each in turn (after
    ``warmup`` untimed rounds), so a slow spell on a shared machine hits every contender alike.
    ``before_call(name)``, when given, runs untimed before each timed call."""
    times: dict[Any, list[float]] = {name: [] for name in contenders}
    for r in range(warmup + rounds):
        for name, fn in contenders.items():
            if before_call is not None and r >= warmup:
                before_call(name)
            start = time.perf_counter()
            fn()
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device | str = "cpu") -> str:
    """One line: CPU model, cores and torch threads, torch version (and the GPU, on CUDA)."""
    text = (
        f"{cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads; "
        f"torch {torch.__version__}, Python {platform.python_version()}"
    )
    if torch.device(device).type == "cuda":
        text = f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}); " + text
    return text


def load_average() -> str:
    try:
        return ", ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"
