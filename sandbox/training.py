"""The training loop: AdamW with warm-up, gradient clipping, EMA, validation, checkpoints, resume and signals.

Resumable by construction: :meth:`Trainer.state_dict` holds everything that
changes results (weights, EMA, optimizer, learning-rate schedule, step, the
torch CPU and CUDA random states, the position in the data order and the
loop's running figures), so a run stopped at any step and resumed from its
checkpoint ends bit-identical, on the CPU, to the same run left alone.

SIGINT (Ctrl-C) and SIGTERM (what SLURM sends before killing a job) finish
the current step, write a checkpoint and stop with :class:`Interrupted`
(exit status 130 or 143); a second Ctrl-C stops at once. A non-finite loss,
or a mean loss more than :data:`DIVERGENCE_FACTOR` times the lowest mean of
an earlier logging interval, stops with :class:`Diverged` and writes nothing,
so the last good checkpoint is kept.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Optional

import torch
from torch.utils.data import DataLoader

from sandbox import checkpoint
from sandbox.ema import EMA
from sandbox.errors import SandboxError
from sandbox.loss import DiffusionLoss
from sandbox.precond import Preconditioned
from sandbox.rundir import MetricsLog

#: a logging interval whose mean loss exceeds this many times the lowest earlier interval mean has diverged
DIVERGENCE_FACTOR = 100.0


class Diverged(SandboxError):
    """The loss became non-finite or exploded; nothing was written after the last good checkpoint."""


class Interrupted(SandboxError):
    """SIGINT or SIGTERM stopped training after a checkpoint; exit status 128 + the signal's number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum
        self.signum = signum


def first_tensor(item: Any) -> torch.Tensor:
    """A batch is a tensor, or a tuple/list whose first element is the data."""
    return item[0] if isinstance(item, (tuple, list)) else item


def warmup_lambda(warmup_steps: int) -> Callable[[int], float]:
    """Linear warm-up to the peak learning rate, then constant (the DDPM recipe)."""
    return lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


@torch.no_grad()
def validation_loss(
    denoiser: Preconditioned,
    loss_fn: DiffusionLoss,
    loader: DataLoader,
    device: torch.device,
    max_batches: int,
    seed: int,
) -> float:
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
    """The loop's running figures (saved in every checkpoint, so a resumed run logs exactly the same lines)."""

    # fmt: off
    step: int = 0
    train_loss: float = math.nan
    val_loss: float = math.nan
    val_loss_ema: float = math.nan
    best_val_loss: float = math.inf
    images_per_s: float = 0.0
    wall_s: float = 0.0                   # training time over every session of the run
    interval_loss: float = 0.0            # sum of the losses since the last log line
    interval_n: int = 0
    interval_images: int = 0
    lowest_interval_loss: float = math.inf  # the divergence check's reference
    # fmt: on


@dataclass
class DataPosition:
    """Where the data order stands: the loader generator's state at the start of the epoch, and batches used."""

    epoch: int = 0
    position: int = 0
    epoch_state: Optional[torch.Tensor] = None


class StopRequest:
    """Records SIGINT / SIGTERM while training; the loop stops after the current step. A second SIGINT stops now."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None

    def __call__(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals reach the main thread only
            return
        previous = {s: signal.signal(s, self) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


class Trainer:
    """Runs ``train.steps`` optimizer steps of a denoiser network, logs to ``metrics.jsonl``, checkpoints."""

    def __init__(
        self,
        recipe: Any,
        parts: Any,
        device: torch.device,
        run_dir: Path,
        *,
        on_sample_grid: Callable[[int, Preconditioned], None] | None = None,
    ):
        cfg = recipe.train
        self.recipe, self.cfg, self.device, self.run_dir = recipe, cfg, device, run_dir
        self.net = parts.net.to(device).train()
        self.loss_fn = DiffusionLoss(cfg.weighting, cfg.min_snr_gamma)
        self.steps = cfg.steps
        self.optimizer = torch.optim.AdamW(
            [p for p in self.net.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_lambda(cfg.warmup_steps))
        self.ema = EMA(self.net, cfg.ema_decay)
        self.denoiser = Preconditioned(self.net, parts.schedule, cfg.target, cfg.sigma_data)
        self.ema_denoiser = Preconditioned(self.ema.model, parts.schedule, cfg.target, cfg.sigma_data)
        self.metrics = MetricsLog(run_dir / "metrics.jsonl")
        self.state = TrainState()
        self.data = DataPosition()
        self.on_sample_grid = on_sample_grid
        self.checkpoints = run_dir / "checkpoints"
        self.last_checkpoint: Optional[Path] = None
        seed = recipe.run.seed
        self.loader_gen = torch.Generator().manual_seed(seed)
        train_set = parts.data.train
        workers = recipe.run.workers
        self.train_loader = DataLoader(
            train_set,
            batch_size=cfg.batch_size,
            shuffle=True,
            drop_last=len(train_set) >= cfg.batch_size,
            generator=self.loader_gen,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=device.type == "cuda",
        )
        self.val_loader = DataLoader(parts.data.val, batch_size=cfg.batch_size, shuffle=False, num_workers=workers)
        self.val_seed = seed + 1
        self.autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if recipe.run.precision == "bf16" and device.type == "cuda"
            else contextlib.nullcontext()
        )

    # ------------------------------------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        """Everything that changes results, as a ``weights_only``-loadable dict."""
        rng: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        data: dict[str, Any] = {"epoch": self.data.epoch, "position": self.data.position}
        if self.data.epoch_state is not None:
            data["epoch_state"] = self.data.epoch_state
        return {
            "step": self.state.step,
            "model": self.net.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.scheduler.state_dict(),
            "rng": rng,
            "data": data,
            "loop": asdict(self.state),
            "recipe": self.recipe.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's state (see :mod:`sandbox.checkpoint`)."""
        self.net.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["lr_scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.data = DataPosition(state["data"]["epoch"], state["data"]["position"], state["data"].get("epoch_state"))
        known = {f.name for f in fields(TrainState)}
        self.state = TrainState(**{k: v for k, v in state["loop"].items() if k in known})
        self.metrics.truncate_after(self.state.step)

    def save_checkpoint(self, name: Optional[str] = None) -> Path:
        """Write a checkpoint atomically (``step_NNNNNN.pt`` unless ``name``) and point ``latest`` at it."""
        name = name or checkpoint.step_name(self.state.step)
        self.last_checkpoint = checkpoint.save(
            self.checkpoints, name, self.state_dict(), keep=self.cfg.keep_checkpoints
        )
        return self.last_checkpoint

    # ------------------------------------------------------------------------------------------- the loop

    def batches(self) -> Iterator[torch.Tensor]:
        """Endless training batches in a resumable order: each epoch's shuffle is a function of the loader
        generator's state at the epoch's start, and a resumed epoch skips the batches already used."""
        while True:
            if self.data.epoch_state is None:
                self.data.epoch_state = self.loader_gen.get_state()
            else:
                self.loader_gen.set_state(self.data.epoch_state)
            iterator = iter(self.train_loader)
            for _ in range(self.data.position):
                next(iterator)
            for batch in iterator:
                self.data.position += 1
                yield first_tensor(batch)
            self.data = DataPosition(self.data.epoch + 1, 0, None)

    def validate(self) -> tuple[float, float]:
        max_batches = self.recipe.eval.val_batches
        with self.autocast:
            raw = validation_loss(
                self.denoiser, self.loss_fn, self.val_loader, self.device, max_batches, self.val_seed
            )
            ema = validation_loss(
                self.ema_denoiser, self.loss_fn, self.val_loader, self.device, max_batches, self.val_seed
            )
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

    def _log(self, step: int, now: float, interval_start: float) -> dict[str, Any]:
        state = self.state
        state.train_loss = state.interval_loss / state.interval_n
        state.images_per_s = state.interval_images / max(now - interval_start, 1e-9)
        if state.train_loss > DIVERGENCE_FACTOR * state.lowest_interval_loss:
            raise Diverged(
                f"training diverged: the mean loss of the {state.interval_n} steps up to step {step} is "
                f"{state.train_loss:.4g}, over {DIVERGENCE_FACTOR:g} times the lowest earlier mean "
                f"({state.lowest_interval_loss:.4g}); try a lower train.lr. {self._kept()}"
            )
        state.lowest_interval_loss = min(state.lowest_interval_loss, state.train_loss)
        record = {
            "train_loss": state.train_loss,
            "images_per_s": state.images_per_s,
            "lr": self.scheduler.get_last_lr()[0],
        }
        state.interval_loss, state.interval_n, state.interval_images = 0.0, 0, 0
        return record

    def _kept(self) -> str:
        if self.last_checkpoint is None:
            return "No checkpoint was written."
        return f"The last good checkpoint, {self.last_checkpoint}, is kept."

    def fit(self, progress: Any = None, task: Any = None) -> TrainState:
        """Train from the current step to ``train.steps``; returns the final state."""
        cfg, state = self.cfg, self.state
        if state.step == 0 and self.steps == 0:
            state.val_loss, state.val_loss_ema = self.validate()
            state.best_val_loss = state.val_loss_ema
            self.metrics.write({"step": 0, "val_loss": state.val_loss, "val_loss_ema": state.val_loss_ema})
        batches = self.batches()
        session_start = interval_start = last_save = time.perf_counter()
        wall_before = state.wall_s
        if progress is not None:
            progress.update(task, completed=state.step)
        with StopRequest().installed() as stop:
            for step in range(state.step + 1, self.steps + 1):
                x0 = next(batches).to(self.device, non_blocking=True)
                loss = self.step(x0)
                if not math.isfinite(loss):
                    raise Diverged(
                        f"training diverged: the loss is {loss} at step {step}; try a lower train.lr "
                        f"or train.grad_clip. {self._kept()}"
                    )
                state.step = step
                state.interval_loss += loss
                state.interval_n += 1
                state.interval_images += x0.shape[0]
                record: dict[str, Any] = {}
                if step % cfg.log_every == 0 or step == self.steps:
                    if self.device.type == "cuda":
                        torch.cuda.synchronize()
                    now = time.perf_counter()
                    record.update(self._log(step, now, interval_start))
                    interval_start = now
                if (cfg.val_every and step % cfg.val_every == 0) or step == self.steps:
                    state.val_loss, state.val_loss_ema = self.validate()
                    state.best_val_loss = min(state.best_val_loss, state.val_loss_ema)
                    record.update(val_loss=state.val_loss, val_loss_ema=state.val_loss_ema)
                    interval_start = time.perf_counter()  # keep validation out of images/s
                if cfg.sample_every and step % cfg.sample_every == 0 and step != self.steps and self.on_sample_grid:
                    self.on_sample_grid(step, self.ema_denoiser)
                    interval_start = time.perf_counter()
                if record:
                    self.metrics.write({"step": step, **record})
                state.wall_s = wall_before + time.perf_counter() - session_start
                due = (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or (
                    cfg.checkpoint_minutes and time.perf_counter() - last_save >= 60 * cfg.checkpoint_minutes
                )
                if (due and step != self.steps) or stop.signum is not None:
                    self.save_checkpoint()
                    last_save = interval_start = time.perf_counter()
                if stop.signum is not None:
                    name = signal.Signals(stop.signum).name
                    raise Interrupted(f"{name} at step {step}: checkpoint {self.last_checkpoint} written", stop.signum)
                if progress is not None:
                    shown = state.train_loss if state.interval_n == 0 else loss
                    progress.update(task, advance=1, loss=f"{shown:.4f}", speed=f"{state.images_per_s:,.0f}")
        return state
