"""The training loop: AdamW with warm-up, gradient clipping, EMA, validation and sample grids."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import DataLoader

from sandbox.ema import EMA
from sandbox.errors import SandboxError
from sandbox.loss import DiffusionLoss
from sandbox.precond import Preconditioned
from sandbox.rundir import MetricsLog


def first_tensor(item: Any) -> torch.Tensor:
    """A batch is a tensor, or a tuple/list whose first element is the data."""
    return item[0] if isinstance(item, (tuple, list)) else item


def endless(loader: DataLoader) -> Iterator[torch.Tensor]:
    while True:
        for batch in loader:
            yield first_tensor(batch)


def warmup_lambda(warmup_steps: int) -> Callable[[int], float]:
    """Linear warm-up to the peak learning rate, then constant (the DDPM recipe)."""
    return lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


@torch.no_grad()
def validation_loss(denoiser: Preconditioned, loss_fn: DiffusionLoss, loader: DataLoader, device: torch.device,
                    max_batches: int, seed: int) -> float:
    """Mean loss on the held-out split with the same t and noise draws at every evaluation."""
    was_training = denoiser.training
    denoiser.eval()
    generator = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    for i, batch in enumerate(loader):
        if max_batches and i >= max_batches:
            break
        x0 = first_tensor(batch).to(device)
        losses = loss_fn(denoiser, x0, generator)
        total += float(losses.sum())
        count += losses.numel()
    denoiser.train(was_training)
    return total / max(count, 1)


@dataclass
class TrainState:
    step: int = 0
    train_loss: float = math.nan
    val_loss: float = math.nan
    val_loss_ema: float = math.nan
    best_val_loss: float = math.inf
    images_per_s: float = 0.0
    wall_s: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """Runs ``train.steps`` optimizer steps of a denoiser network and logs to ``metrics.jsonl``."""

    def __init__(self, recipe, parts, device: torch.device, run_dir: Path, *,
                 on_sample_grid: Callable[[int, Preconditioned], None] | None = None,
                 on_checkpoint: Callable[["Trainer"], None] | None = None):
        cfg = recipe.train
        self.recipe, self.cfg, self.device, self.run_dir = recipe, cfg, device, run_dir
        self.net = parts.net.to(device).train()
        self.loss_fn = DiffusionLoss(cfg.weighting, cfg.min_snr_gamma)
        self.steps = cfg.steps
        self.optimizer = torch.optim.AdamW([p for p in self.net.parameters() if p.requires_grad], lr=cfg.lr,
                                           weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_lambda(cfg.warmup_steps))
        self.ema = EMA(self.net, cfg.ema_decay)
        self.denoiser = Preconditioned(self.net, parts.schedule, cfg.target, cfg.sigma_data)
        self.ema_denoiser = Preconditioned(self.ema.model, parts.schedule, cfg.target, cfg.sigma_data)
        self.metrics = MetricsLog(run_dir / "metrics.jsonl")
        self.state = TrainState()
        self.on_sample_grid = on_sample_grid
        self.on_checkpoint = on_checkpoint
        seed = recipe.run.seed
        loader_gen = torch.Generator().manual_seed(seed)
        train_set = parts.data.train
        workers = recipe.run.workers
        self.train_loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True,
                                       drop_last=len(train_set) >= cfg.batch_size, generator=loader_gen,
                                       num_workers=workers, persistent_workers=workers > 0,
                                       pin_memory=device.type == "cuda")
        self.val_loader = DataLoader(parts.data.val, batch_size=cfg.batch_size, shuffle=False,
                                     num_workers=workers)
        self.val_seed = seed + 1
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                         if recipe.run.precision == "bf16" and device.type == "cuda" else contextlib.nullcontext())

    def validate(self) -> tuple[float, float]:
        max_batches = self.recipe.eval.val_batches
        with self.autocast:
            raw = validation_loss(self.denoiser, self.loss_fn, self.val_loader, self.device, max_batches,
                                  self.val_seed)
            ema = validation_loss(self.ema_denoiser, self.loss_fn, self.val_loader, self.device, max_batches,
                                  self.val_seed)
        return raw, ema

    def step(self, x0: torch.Tensor) -> float:
        with self.autocast:
            loss = self.loss_fn(self.denoiser, x0).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.ema.update(self.net)
        return float(loss.detach())

    def fit(self, progress=None, task=None) -> TrainState:
        cfg, state = self.cfg, self.state
        batches = endless(self.train_loader)
        start = interval_start = time.perf_counter()
        interval_loss, interval_n, interval_images = 0.0, 0, 0
        if self.steps == 0:
            state.val_loss, state.val_loss_ema = self.validate()
            state.best_val_loss = state.val_loss_ema
            self.metrics.write({"step": 0, "val_loss": state.val_loss, "val_loss_ema": state.val_loss_ema})
        for step in range(1, self.steps + 1):
            x0 = next(batches).to(self.device, non_blocking=True)
            loss = self.step(x0)
            if not math.isfinite(loss):
                raise SandboxError(f"training diverged: loss is {loss} at step {step}; "
                                   "try a lower train.lr or train.grad_clip")
            state.step = step
            interval_loss += loss
            interval_n += 1
            interval_images += x0.shape[0]
            record: dict[str, Any] = {}
            if step % cfg.log_every == 0 or step == self.steps:
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                now = time.perf_counter()
                state.train_loss = interval_loss / interval_n
                state.images_per_s = interval_images / max(now - interval_start, 1e-9)
                record.update(train_loss=state.train_loss, images_per_s=state.images_per_s,
                              lr=self.scheduler.get_last_lr()[0])
                interval_loss, interval_n, interval_images, interval_start = 0.0, 0, 0, now
            if (cfg.val_every and step % cfg.val_every == 0) or step == self.steps:
                state.val_loss, state.val_loss_ema = self.validate()
                state.best_val_loss = min(state.best_val_loss, state.val_loss_ema)
                record.update(val_loss=state.val_loss, val_loss_ema=state.val_loss_ema)
                interval_start = time.perf_counter()  # keep validation out of images/s
            if cfg.sample_every and step % cfg.sample_every == 0 and step != self.steps and self.on_sample_grid:
                self.on_sample_grid(step, self.ema_denoiser)
                interval_start = time.perf_counter()
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step != self.steps and self.on_checkpoint:
                self.on_checkpoint(self)
            if record:
                self.metrics.write({"step": step, **record})
            if progress is not None:
                progress.update(task, advance=1, loss=f"{state.train_loss:.4f}" if interval_n == 0 else f"{loss:.4f}",
                                speed=f"{state.images_per_s:,.0f}")
        state.wall_s = time.perf_counter() - start
        return state

    def checkpoint(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({
            "step": self.state.step,
            "model": self.net.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.scheduler.state_dict(),
            "recipe": self.recipe.to_dict(),
        }, path)
