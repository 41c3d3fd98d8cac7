"""A recipe's typed sections ``train``, ``eval`` (with ``eval.nll``) and ``run``: their keys, defaults and checks.

Each is a dataclass whose ``__post_init__`` checks its own values (:mod:`sandbox.params`), so a wrong value is
reported as ``recipe key 'train.lr': ...`` before any work (:mod:`sandbox.recipe` adds the section). This module
imports neither torch nor OmegaConf: the command line reads the names it offers from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from sandbox.errors import ParameterError
from sandbox.params import at_least, between, finite, one_of, positive
from sandbox.targets import TARGETS, WEIGHTINGS

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16", "fp16")
IMAGE_METRICS = ("fid", "kid")  # eval.metrics: Frechet and Kernel Inception Distance (sandbox.engine.fid)
METRICS = (*IMAGE_METRICS, "nll")  # eval.metrics; nll: the likelihood of the validation split (eval.nll)
LR_SCHEDULES = ("constant", "cosine", "linear")  # train.lr_schedule (sandbox.engine.lr_schedule)
NLL_ESTIMATORS = ("vlb", "elbo", "ode")  # sandbox.engine.likelihood


@dataclass
class TrainConfig:
    # fmt: off
    steps: int = 1000              # optimizer steps
    batch_size: int = 128          # examples per step
    lr: float = 2e-4               # peak AdamW learning rate
    warmup_steps: int = 100        # linear learning-rate warm-up, in steps
    lr_schedule: str = "constant"  # after the warm-up: constant, cosine or linear decay to 0 at train.steps
    weight_decay: float = 0.0      # AdamW decoupled weight decay
    grad_clip: float = 1.0         # max global gradient norm; 0 disables clipping
    ema_decay: float = 0.999       # EMA of the weights used for sampling
    target: str = "epsilon"        # what the network predicts: epsilon, x0, v, or edm (EDM preconditioning)
    weighting: str = "uniform"     # loss weighting: uniform, min_snr (Hang et al. 2023) or edm (Karras et al. 2022)
    min_snr_gamma: float = 5.0     # gamma of the min-SNR weighting
    sigma_data: float = 0.5        # data standard deviation assumed by EDM preconditioning and weighting
    log_every: int = 50            # steps between metrics.jsonl lines
    val_every: int = 250           # steps between validation losses; 0: only at the end
    sample_every: int = 0          # steps between sample grids; 0: only at the end
    checkpoint_every: int = 0      # steps between checkpoints; 0: only at the end
    checkpoint_minutes: float = 0.0  # minutes of wall clock between checkpoints (for job time limits); 0: off
    keep_checkpoints: int = 0      # newest step checkpoints kept (final.pt is always kept); 0: all
    conditional: bool = False      # class-conditional: the network sees each item's label (the data's classes)
    label_dropout: float = 0.1     # share of labels replaced by the null class, for guidance (Ho & Salimans 2022)
    # fmt: on

    def __post_init__(self) -> None:
        one_of(self, "target", TARGETS)
        one_of(self, "weighting", WEIGHTINGS)
        one_of(self, "lr_schedule", LR_SCHEDULES)
        positive(self, "lr", "min_snr_gamma", "sigma_data")
        for key in ("steps", "warmup_steps", "val_every", "sample_every", "checkpoint_every", "keep_checkpoints"):
            at_least(self, key, 0)
        at_least(self, "checkpoint_minutes", 0.0)
        at_least(self, "batch_size", 1)
        at_least(self, "log_every", 1)
        at_least(self, "weight_decay", 0.0)
        at_least(self, "grad_clip", 0.0)
        between(self, "ema_decay", 0.0, 1.0, high_open=True)
        between(self, "label_dropout", 0.0, 1.0, high_open=True)


@dataclass
class NllConfig:
    """``eval.nll``: how ``eval.metrics: [nll]`` and ``sandbox likelihood`` estimate ``-log p(x)``."""

    # fmt: off
    estimators: list[str] = field(default_factory=lambda: ["ode"])  # vlb, elbo and/or ode
    split: str = "val"             # the items scored: val (held out), or train (a gap between the two is overfitting)
    items: int = 1000              # items scored, the split's first (0: the whole split)
    batch: int = 500               # items per batch
    draws: int = 16                # elbo: log-SNR draws per item
    variance: str = "beta"         # vlb: the reverse variance, beta (beta_t) or posterior (beta~_t)
    divergence: str = "auto"       # ode: exact, hutchinson, or auto (exact for vectors of <= 64 coordinates)
    probes: int = 1                # ode: Hutchinson probes per item
    rtol: float = 1e-3             # ode: the solver's relative tolerance
    atol: float = 1e-3             # ode: the solver's absolute tolerance
    log_snr_max: Optional[float] = None  # the data's end, at most this log-SNR; null: set by the data (docs)
    dequantize: Optional[bool] = None  # ode: uniform dequantisation of discrete data; null: on for discrete data
    seed: int = 0                  # the estimators' noise
    # fmt: on

    def __post_init__(self) -> None:
        try:
            bad = [e for e in self.estimators if e not in NLL_ESTIMATORS]
            if not self.estimators or bad or len(set(self.estimators)) != len(self.estimators):
                expected = f"a non-empty list of distinct names from {', '.join(NLL_ESTIMATORS)}"
                raise ParameterError("estimators", list(self.estimators), expected)
            at_least(self, "items", 0)
            for key in ("batch", "draws", "probes"):
                at_least(self, key, 1)
            one_of(self, "split", ("val", "train"))
            one_of(self, "variance", ("beta", "posterior"))
            one_of(self, "divergence", ("auto", "exact", "hutchinson"))
            positive(self, "rtol", "atol")
            if self.log_snr_max is not None:
                finite(self, "log_snr_max")
        except ParameterError as exc:
            raise ParameterError(f"nll.{exc.key}", exc.value, exc.expected) from None


@dataclass
class EvalConfig:
    # fmt: off
    val_batches: int = 8           # validation batches per evaluation (0: the whole split)
    num_samples: int = 64          # samples generated at the end of the run
    sample_batch: int = 256        # samples per sampler call
    grid_samples: int = 64         # samples drawn in each intermediate grid
    metrics: list[str] = field(default_factory=list)  # fid, kid (of the final samples), nll (of the validation split)
    classes: Optional[list[Any]] = None  # a conditional run's classes to draw (indices or names); null: all, balanced
    nll: NllConfig = field(default_factory=NllConfig)  # the likelihood's estimators and settings
    # fmt: on

    def __post_init__(self) -> None:
        at_least(self, "val_batches", 0)
        for key in ("num_samples", "sample_batch", "grid_samples"):
            at_least(self, key, 1)
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or len(set(self.metrics)) != len(self.metrics):
            expected = f"a list of distinct names from {', '.join(METRICS)}"
            raise ParameterError("metrics", list(self.metrics), expected)
        if self.classes is not None and (
            not self.classes or not all(isinstance(c, (int, str)) and not isinstance(c, bool) for c in self.classes)
        ):
            raise ParameterError("classes", list(self.classes), "a non-empty list of class indices or names, or null")

    @property
    def image_metrics(self) -> list[str]:
        """The metrics of :data:`IMAGE_METRICS` asked for (FID and KID, :mod:`sandbox.engine.fid`)."""
        return [m for m in self.metrics if m in IMAGE_METRICS]


@dataclass
class RunConfig:
    # fmt: off
    device: str = "auto"           # auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps
    seed: int = 0                  # seeds data order, initialisation, noise and sampling
    output: str = "runs"           # parent folder of run folders
    workers: int = 0               # DataLoader worker processes
    precision: str = "fp32"        # fp32; bf16 or fp16 autocast (fp16 with a gradient scaler)
    compile: bool = False          # compile the denoiser network with torch.compile
    channels_last: Optional[bool] = None  # channels-last memory for image data; null: on CUDA only
    data_on_device: Optional[bool] = None  # batch a stored train split on the device; null: when it fits
    threads: int = 0               # CPU threads for torch; 0 leaves torch's default
    loggers: list[Any] = field(default_factory=list)  # loggers receiving the run's events: names or {name: ...}
    # fmt: on

    def __post_init__(self) -> None:
        base, _, index = self.device.partition(":")
        if base not in DEVICES or (index and not (base == "cuda" and index.isdigit())):
            raise ParameterError("device", self.device, f"one of {', '.join(DEVICES)} or cuda:N")
        one_of(self, "precision", PRECISIONS)
        at_least(self, "workers", 0)
        at_least(self, "threads", 0)
        names = [entry.get("name") if isinstance(entry, dict) else entry for entry in self.loggers]
        if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
            expected = "a list of distinct logger names, or {name: ..., <its parameters>} mappings"
            raise ParameterError("loggers", list(self.loggers), expected)
