"""A small digit classifier that scores generated 8x8 digits, trained once and cached.

The scores follow the "classifier confidence" family of sample-quality checks
(the Inception Score of Salimans et al., 2016, split into its two halves): a
sample a classifier trained on real digits labels with high confidence looks
like *some* digit, and an even spread of predicted classes means the samples
cover all ten digits rather than collapsing onto a few.

The classifier is a two-hidden-layer MLP trained full-batch on the training
split only, so held-out real digits are scored as unseen data, exactly like
generated samples. It is cached on disk under ``$SANDBOX_CACHE`` (default
``~/.cache/diffusion-sandbox``) and in memory, keyed by the split and
:data:`VERSION`.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# fmt: off
VERSION = "mlp2x128-v2"  # bump when the architecture or training recipe changes
CONFIDENT = 0.9          # top-class probability at or above which a sample counts as confidently a digit
STEPS = 200              # full-batch AdamW steps (about a second on two CPU cores)
# fmt: on

_MEMORY: dict[str, DigitClassifier] = {}


class DigitClassifier(nn.Module):
    """``[B, 1, 8, 8]`` images in [-1, 1] -> ``[B, 10]`` class logits."""

    def __init__(self, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def cache_dir() -> Path:
    """``$SANDBOX_CACHE``, else ``~/.cache/diffusion-sandbox``."""
    return Path(os.environ.get("SANDBOX_CACHE") or Path.home() / ".cache" / "diffusion-sandbox")


def cache_path(key: str) -> Path:
    return cache_dir() / f"digits-classifier-{VERSION}-{key}.pt"


def train_classifier(images: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> DigitClassifier:
    """Fit a :class:`DigitClassifier` to ``images [N, 1, 8, 8]`` and integer ``labels [N]``, deterministically."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small gains nothing from threads, and loses much on a busy machine
    try:
        with torch.enable_grad():
            for _ in range(STEPS):
                loss = F.cross_entropy(model(images), labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval().requires_grad_(False)


def get_classifier(images: torch.Tensor, labels: torch.Tensor, *, key: str) -> DigitClassifier:
    """The classifier for one training split: from memory, else the disk cache, else trained and cached.

    ``key`` must identify the split (the same key must always mean the same
    ``images`` and ``labels``); it names the cache file.
    """
    if key in _MEMORY:
        return _MEMORY[key]
    path = cache_path(key)
    model = DigitClassifier()
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        model = model.eval().requires_grad_(False)
    except Exception as exc:
        if path.exists():
            warnings.warn(
                f"digit-classifier cache {path} is unreadable ({type(exc).__name__}); rebuilding it", stacklevel=2
            )
        model = train_classifier(images, labels)
        _write_cache(model, path)
    _MEMORY[key] = model
    return model


def _write_cache(model: DigitClassifier, path: Path) -> None:
    """Save the classifier atomically (a parallel run never reads half a file); a cache that cannot be written
    (a full disk, no permission) is a warning, costs a retrain next time, and leaves no temporary file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), partial)
        os.replace(partial, path)
    except (OSError, RuntimeError) as exc:  # torch's writer reports a failed write as a RuntimeError
        detail = (str(exc).splitlines() or [type(exc).__name__])[0]
        warnings.warn(
            f"could not write the digit-classifier cache {path} ({detail}); it is trained again next time",
            stacklevel=3,
        )
    finally:
        partial.unlink(missing_ok=True)


def _logits(model: nn.Module, samples: torch.Tensor) -> torch.Tensor:
    """The classifier's ``[B, 10]`` logits of ``samples [B, 1, H, W]``, resized to 8x8 and clipped to [-1, 1]."""
    x = torch.nan_to_num(samples.detach().float().cpu(), nan=0.0)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.shape[-2:] != (8, 8):
        x = F.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False, antialias=True)
    logits: torch.Tensor = model(x.clamp(-1.0, 1.0))
    return logits


@torch.no_grad()
def digit_scores(model: nn.Module, samples: torch.Tensor) -> dict[str, float]:
    """Classifier-based scores of ``samples [B, 1, H, W]`` (any H, W; resized to 8x8, clipped to [-1, 1]).

    ``confident_share``: share of samples whose top-class probability is at least :data:`CONFIDENT`.
    ``mean_confidence``: mean top-class probability (0.1 for a classifier that cannot tell).
    ``class_coverage``: entropy of the predicted-class histogram divided by log 10;
    1.0 when all ten digits are predicted equally often, 0.0 when only one is.
    """
    probs = _logits(model, samples).softmax(dim=-1)
    confidence, predicted = probs.max(dim=-1)
    share = torch.bincount(predicted, minlength=10).double() / len(predicted)
    share = share[share > 0]
    entropy = float(-(share * share.log()).sum())
    return {
        "confident_share": float((confidence >= CONFIDENT).double().mean()),
        "class_coverage": max(0.0, entropy / math.log(10)),
        "mean_confidence": float(confidence.double().mean()),
    }


@torch.no_grad()
def class_accuracy(model: nn.Module, samples: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Conditional accuracy of ``samples [B, 1, H, W]`` drawn for the digits ``labels [B]`` (prepared as
    :func:`digit_scores` prepares them).

    ``class_accuracy``: share of samples whose predicted digit (the classifier's argmax) is the requested one.
    """
    labels = torch.as_tensor(labels).detach().to(device="cpu", dtype=torch.int64).reshape(-1)
    if labels.shape != (len(samples),):
        raise ValueError(f"labels must have one entry per sample ({len(samples)}), got {labels.numel()}")
    predicted = _logits(model, samples).argmax(dim=-1)
    return {"class_accuracy": float((predicted == labels).double().mean()) if len(labels) else math.nan}
