"""The training loop: AdamW with warm-up, gradient clipping, EMA, validation, checkpoints, resume and signals.

Resumable by construction: :meth:`Trainer.state_dict` holds everything that
changes results (weights, EMA, optimizer, learning-rate schedule, step, the
torch CPU and CUDA random states, the position in the data order and the
loop's running figures), so a run stopped at any step and resumed from its
checkpoint ends bit-identical, on the CPU, to the same run left alone.

SIGINT (Ctrl-C) and SIGTERM (what SLURM sends before killing a job) finish
the current step, write a checkpoint and stop with :class:`Interrupted`
(exit status 130 or 143); a second Ctrl-C stops at once. A non-finite loss,
non-finite weights (or EMA weights), a mean loss more than
:data:`ABOVE_START_FACTOR` times the loss of the first step, or more than
:data:`DIVERGENCE_FACTOR` times the lowest mean of an earlier logging
interval, stops with :class:`Diverged` and writes nothing, so the last good
checkpoint is kept. All are checked wherever the losses are read (log,
validation, samples, checkpoints), from figures kept on the device.

Built for speed on GPUs too: the loop never waits for the device between
steps (losses add up on the device and are read only where the loop logs,
validates, samples or checkpoints), ``run.precision`` selects bf16 or fp16
autocast (fp16 with a gradient scaler), ``run.compile`` compiles the
network with :func:`torch.compile`, 4-D data trains in the channels-last
memory format on CUDA, AdamW is the fused kernel (CUDA and CPU), and a split
stored as one tensor is batched on the device (:mod:`sandbox.engine.batches`).

Under torchrun the network trains in DistributedDataParallel
(:mod:`sandbox.engine.distributed`): each process takes its slice of every global
batch and of the batch's noise draws, losses are averaged over the
processes where they are read, a signal to any process stops all of them at
the same step (agreed after every step over gloo, without waiting for the
device), and rank 0 alone writes.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Optional

import torch
from torch.utils.data import DataLoader

from sandbox.engine import checkpoint, distributed
from sandbox.engine.acceleration import COMPILER_MODULES, autocast, compile_network
from sandbox.engine.batches import DataPosition, batch_source
from sandbox.engine.condition import drop_labels
from sandbox.engine.ema import EMA
from sandbox.engine.events import RunEvents
from sandbox.engine.loss import DiffusionLoss
from sandbox.engine.lr_schedule import lr_factor
from sandbox.engine.precond import Preconditioned
from sandbox.engine.rundir import MetricsLog, RunDir
from sandbox.engine.stop import StopRequest
from sandbox.engine.validation import validation_loss
from sandbox.errors import Diverged, Interrupted, RecipeError
from sandbox.protocols import null_label

#: a logging interval whose mean loss exceeds this many times the lowest earlier interval mean has diverged
DIVERGENCE_FACTOR = 100.0
#: a mean loss over this many times the loss of the first step (the network at its initialisation) has diverged:
#: healthy runs never log a mean above 1.07x their first loss (toy2d; quickstart 1.02x), while train.lr=1e2
#: and 1e3 on toy2d stay 53x to 1.2e6x and 5,600x to 9.7e9x above it all run, without a non-finite value
ABOVE_START_FACTOR = 10.0


__all__ = ["ABOVE_START_FACTOR", "DIVERGENCE_FACTOR", "TrainState", "Trainer"]


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
    first_loss: float = math.nan          # the loss of step 1, the reference of ABOVE_START_FACTOR (nan: not read yet)
    # fmt: on


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
        events: RunEvents | None = None,
    ):
        cfg, run = recipe.train, recipe.run
        self.recipe, self.cfg, self.device, self.run_dir = recipe, cfg, device, run_dir
        self.channels_last = len(parts.data.shape) == 3 and (
            run.channels_last if run.channels_last is not None else device.type == "cuda"
        )
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.net = parts.net.to(device, memory_format=self.memory_format).train()
        self.loss_fn = DiffusionLoss(cfg.weighting, cfg.min_snr_gamma)
        self.classes = parts.classes  # 0: unconditional; else the labels train the network, the null class too
        self.steps = cfg.steps
        self.optimizer = torch.optim.AdamW(
            [p for p in self.net.parameters() if p.requires_grad],
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            fused=device.type in ("cuda", "cpu") or None,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_factor(cfg.lr_schedule, cfg.warmup_steps, cfg.steps)
        )
        self.ema = EMA(self.net, cfg.ema_decay)
        self.main = distributed.is_main()  # the one process that writes files (all, in a single-process run)
        network = distributed.wrap(self.net, device)  # DistributedDataParallel under torchrun
        self.compiled = compile_network(network) if run.compile else network
        self.denoiser = Preconditioned(self.compiled, parts.schedule, cfg.target, cfg.sigma_data)
        self.ema_denoiser = Preconditioned(self.ema.model, parts.schedule, cfg.target, cfg.sigma_data)
        self.metrics = MetricsLog(RunDir(run_dir).metrics)
        self.state = TrainState()
        self.data = DataPosition()
        self.on_sample_grid = on_sample_grid
        self.events = events or RunEvents()  # the loggers run.loggers enables (main process only)
        self.checkpoints = RunDir(run_dir).checkpoints
        self.last_checkpoint: Optional[Path] = None
        self.within: Optional[tuple[int, int]] = None  # this process's first row and the global batch size
        self.pending_loss = torch.zeros((), dtype=torch.float64)  # the interval's loss sum, on the device in fit
        self.last_read = 0  # the last step whose loss was read on the host
        self.pending_first: Optional[torch.Tensor] = None  # step 1's loss on the device, until it is read
        self.loader_gen = torch.Generator().manual_seed(run.seed)
        self.batch_source = batch_source(
            parts.data.train,
            cfg.batch_size,
            self.loader_gen,
            device,
            seed=run.seed,
            workers=run.workers,
            on_device=run.data_on_device,
            labels=self.classes > 0,
        )
        self.val_loader = DataLoader(parts.data.val, batch_size=cfg.batch_size, shuffle=False, num_workers=run.workers)
        self.val_seed = run.seed + 1
        self.autocast = autocast(run.precision, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=run.precision == "fp16")

    # ------------------------------------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        """Everything that changes results, as a ``weights_only``-loadable dict."""
        rng: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        if self.device.type == "cuda":  # the generator this run draws from (each process has its own device)
            rng["cuda_device"] = torch.cuda.get_rng_state(self.device)
        data: dict[str, Any] = {"epoch": self.data.epoch, "position": self.data.position}
        if self.data.epoch_state is not None:
            data["epoch_state"] = self.data.epoch_state
        return {
            "step": self.state.step,
            "model": self.net.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.scheduler.state_dict(),
            "grad_scaler": self.scaler.state_dict(),
            "rng": rng,
            "data": data,
            "loop": asdict(self.state),
            "recipe": self.recipe.to_dict(),
            "threads": torch.get_num_threads(),  # what run.threads: 0 chose, which a resumed run keeps
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's state (see :mod:`sandbox.engine.checkpoint`)."""
        self.net.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["lr_scheduler"])
        if state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        if "cuda_device" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda_device"], self.device)
        self.data = DataPosition(state["data"]["epoch"], state["data"]["position"], state["data"].get("epoch_state"))
        known = {f.name for f in fields(TrainState)}
        self.state = TrainState(**{k: v for k, v in state["loop"].items() if k in known})
        if self.main:
            self.metrics.truncate_after(self.state.step)

    def save_checkpoint(self, name: Optional[str] = None) -> Path:
        """Write a checkpoint atomically (``step_NNNNNN.pt`` unless ``name``) and point ``latest`` at it.

        Every process holds the same state; rank 0 alone writes it.
        """
        name = name or checkpoint.step_name(self.state.step)
        if not self.main:
            self.last_checkpoint = self.checkpoints / name
            return self.last_checkpoint
        self.last_checkpoint = checkpoint.save(
            self.checkpoints, name, self.state_dict(), keep=self.cfg.keep_checkpoints
        )
        self.events.emit("on_checkpoint", path=self.last_checkpoint)
        return self.last_checkpoint

    # ------------------------------------------------------------------------------------------- the loop

    def batches(self) -> Iterator[tuple[torch.Tensor, Optional[torch.Tensor]]]:
        """Endless training batches on the device, in the resumable order of :mod:`sandbox.engine.batches`.

        Every process walks the same order of global batches and keeps its own
        :func:`sandbox.engine.distributed.part`; ``self.within`` tells the loss where it lies, so the noise and
        times are drawn for the whole global batch and split the same way. Each batch is ``(x_0, labels)``,
        the labels None in an unconditional run.
        """
        for batch in self.batch_source(self.data):
            x0, labels = batch if isinstance(batch, tuple) else (batch, None)
            self.within = (distributed.part(x0.shape[0])[0], x0.shape[0])
            x0 = distributed.shard(x0)
            labels = distributed.shard(labels) if labels is not None else None
            yield (x0.contiguous(memory_format=self.memory_format) if self.channels_last else x0), labels

    def validate(self) -> tuple[float, float]:
        max_batches = self.recipe.eval.val_batches
        with self.autocast:
            raw = validation_loss(
                self.denoiser, self.loss_fn, self.val_loader, self.device, max_batches, self.val_seed, self.classes > 0
            )
            ema = validation_loss(
                self.ema_denoiser,
                self.loss_fn,
                self.val_loader,
                self.device,
                max_batches,
                self.val_seed,
                self.classes > 0,
            )
        return raw, ema

    def step(self, x0: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One optimizer step on the batch ``x0`` (of classes ``labels`` in a conditional run, a share
        ``train.label_dropout`` of them dropped to the null class); returns the mean loss as a detached device
        tensor (reading it waits for the device, so the loop reads it only where it reports)."""
        if labels is not None:
            labels = drop_labels(labels, self.cfg.label_dropout, null_label(self.classes), self.within)
        with self.autocast:
            loss = self.loss_fn(self.denoiser, x0, within=self.within, labels=labels).mean()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.ema.update(self.net)
        return loss.detach()

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

    def _largest_weight(self) -> torch.Tensor:
        """The largest magnitude over the weights and the EMA weights, on the device (nan or inf if one is)."""
        tensors = [p.detach() for p in (*self.net.parameters(), *self.ema.model.parameters()) if p.is_floating_point()]
        return torch.stack([t.abs().amax().float() for t in tensors if t.numel()]).amax()

    def _read_losses(self, step: int) -> None:
        """Wait for the device and read the interval's loss sum into the state; stop if training diverged.

        One read brings back the interval's loss sum, step 1's loss (once) and the largest weight, so the
        step itself never waits for the device. With several processes the sums are first averaged over them
        (in place: a later read in the same interval averages the already equal part again, which leaves it
        unchanged); the weights are the same in every process.
        """
        state, lr = self.state, f"lower train.lr (now {self.cfg.lr:g})"
        total_t = distributed.all_reduce_mean(self.pending_loss)
        first_t = total_t.new_full((), math.nan)
        if self.pending_first is not None:
            first_t = distributed.all_reduce_mean(self.pending_first).to(total_t.dtype)
        total, first, largest = torch.stack([total_t, first_t, self._largest_weight().to(total_t.dtype)]).tolist()
        where = steps_text(self.last_read + 1, step)
        if not math.isfinite(total):
            raise Diverged(
                f"training diverged: the loss became {total} {where}; try a lower train.lr or train.grad_clip. "
                f"{self._kept()}"
            )
        if not math.isfinite(largest):
            raise Diverged(
                f"training diverged: the weights became {largest} {where}, although every loss was finite; "
                f"the learning rate is the likely cause: {lr}, or set train.grad_clip. {self._kept()}"
            )
        if self.pending_first is not None:
            state.first_loss, self.pending_first = first, None
        mean = total / max(state.interval_n, 1)
        if mean > ABOVE_START_FACTOR * state.first_loss:
            raise Diverged(
                f"training diverged: the mean loss of the {state.interval_n} steps up to step {step} is {mean:.4g}, "
                f"over {ABOVE_START_FACTOR:g} times the loss of the first step ({state.first_loss:.4g}), so the "
                f"network is moving away from the data; the learning rate is the likely cause: {lr}. {self._kept()}"
            )
        state.interval_loss, self.last_read = total, step

    def log_record(self, step: int, record: dict[str, Any]) -> None:
        """Append a line to ``metrics.jsonl`` (the record of truth), then tell the loggers (``on_metrics``)."""
        self.metrics.write({"step": step, **record})
        self.events.emit("on_metrics", step=step, record=dict(record))

    def fit(self, progress: Any = None, task: Any = None) -> TrainState:
        """Train from the current step to ``train.steps``; returns the final state.

        The step losses add up on the device, in float64 whatever the precision (so the sum is the same
        whether or not a checkpoint read it mid-interval), and are read only at steps that log, validate,
        sample or checkpoint: a loss that diverged stops training there, before anything is written.
        """
        cfg, state = self.cfg, self.state
        if state.step == 0 and self.steps == 0:
            state.val_loss, state.val_loss_ema = self.validate()
            state.best_val_loss = state.val_loss_ema
            if self.main:
                self.log_record(0, {"val_loss": state.val_loss, "val_loss_ema": state.val_loss_ema})
        batches = self.batches()
        accumulate = torch.float32 if self.device.type == "mps" else torch.float64
        self.pending_loss = torch.tensor(state.interval_loss, dtype=accumulate, device=self.device)
        self.last_read = state.step
        session_start = interval_start = last_save = time.perf_counter()
        wall_before = state.wall_s
        if progress is not None:
            progress.update(task, completed=state.step)
        with StopRequest().installed() as stop:
            for step in range(state.step + 1, self.steps + 1):
                x0, labels = next(batches)
                try:
                    loss = self.step(x0) if labels is None else self.step(x0, labels)
                except Exception as exc:
                    if self.compiled is not self.net and type(exc).__module__.startswith(COMPILER_MODULES):
                        raise RecipeError(
                            f"recipe key 'run.compile': True, but torch.compile cannot compile the denoiser on "
                            f"this machine ({type(exc).__name__}: {str(exc).strip().splitlines()[0]}); "
                            "set run.compile=false"
                        ) from exc
                    raise
                self.pending_loss += loss
                if step == 1:  # the reference of ABOVE_START_FACTOR, read with the losses
                    self.pending_first = loss.clone()
                state.step = step
                state.interval_n += 1
                state.interval_images += self.within[1] if self.within else x0.shape[0]  # the global batch
                final = step == self.steps
                log = step % cfg.log_every == 0 or final
                validate = (cfg.val_every and step % cfg.val_every == 0) or final
                sample = cfg.sample_every and step % cfg.sample_every == 0 and not final and self.on_sample_grid
                timed = bool(cfg.checkpoint_minutes) and time.perf_counter() - last_save >= 60 * cfg.checkpoint_minutes
                requested = stop.signum  # read once: a signal arriving later counts at the next step
                if distributed.active():  # a signal to any process, or any process's clock, counts for all
                    signum, due = distributed.agree(requested or 0, timed)
                    requested, timed = int(signum) or None, bool(due)
                save = (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or timed
                save = (save and not final) or requested is not None
                if log or validate or sample or save:
                    self._read_losses(step)
                record: dict[str, Any] = {}
                if log:
                    now = time.perf_counter()
                    record.update(self._log(step, now, interval_start))
                    self.pending_loss.zero_()
                    interval_start = now
                if validate:
                    state.val_loss, state.val_loss_ema = self.validate()
                    state.best_val_loss = min(state.best_val_loss, state.val_loss_ema)
                    record.update(val_loss=state.val_loss, val_loss_ema=state.val_loss_ema)
                    interval_start = time.perf_counter()  # keep validation out of images/s
                if sample:
                    if self.main:
                        self.on_sample_grid(step, self.ema_denoiser)  # type: ignore[misc]
                    interval_start = time.perf_counter()
                if record and self.main:
                    self.log_record(step, record)
                state.wall_s = wall_before + time.perf_counter() - session_start
                if save:
                    self.save_checkpoint()
                    last_save = interval_start = time.perf_counter()
                if requested is not None:
                    name = signal.Signals(requested).name
                    raise Interrupted(f"{name} at step {step}: checkpoint {self.last_checkpoint} written", requested)
                if progress is not None:
                    if log:
                        progress.update(task, loss=f"{state.train_loss:.4f}", speed=f"{state.images_per_s:,.0f}")
                    progress.update(task, advance=1)
        return state


def steps_text(first: int, last: int) -> str:
    return f"at step {last}" if first == last else f"between step {first} and step {last}"
