"""Fréchet and Kernel Inception Distance of image samples against the training split (``eval.metrics: [fid, kid]``).

FID (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium") is the Fréchet distance between Gaussians fitted to two sets of Inception-v3 pool features,
``||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))``. KID (Binkowski et al. 2018, "Demystifying MMD
GANs") is the unbiased squared MMD between the features under the cubic kernel ``k(x, y) = (x.y / d + 1)^3``,
averaged over 100 random subsets of 1,000 (fewer when a set is smaller). Both are lower-is-better.

The network and the math are torchmetrics' (the ``fid`` extra): features are its ``NoTrainInceptionV3``,
torch-fidelity's port of the TensorFlow Inception graph of the original FID code (2048 pool features),
fed 8-bit images (samples quantised as a PNG would be, grey repeated to three channels) resized to
299 x 299 with TensorFlow 1.x's bilinear resize, as the original code, torch-fidelity and the papers'
figures do; FID is its ``FrechetInceptionDistance`` and KID its ``KernelInceptionDistance``, both
fed the features. Any callable ``images -> features`` can replace Inception (:class:`Features`).

The training split's reference statistics (FID's float64 moment sums and a seeded pool of at most
:data:`KID_POOL` features for KID) are computed once and cached in ``DataSplits.cache_dir`` (beside the
data), or, when a dataset gives none, in ``fid_reference/`` beside the run folder. A cache file's name is
a hash of everything that changes it (the dataset section, the split's length, item shape and a
fingerprint of its items, the features' name, the pool size), so different data, extractors or sizes never
share one; a file that does not load (torn by a crash, foreign) is recomputed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from rich.console import Console

from sandbox.engine.rundir import atomic_write
from sandbox.errors import RecipeError, SandboxError
from sandbox.protocols import DataSplits

# fmt: off
WEIGHTS_URL = (               # the Inception-v3 weights torch-fidelity (and so torchmetrics) loads
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
WEIGHTS_FILE = WEIGHTS_URL.rsplit("/", 1)[1]
WEIGHTS_ENV = "SANDBOX_INCEPTION_WEIGHTS"  # a local path to that file, read instead of torch hub's cache
EXTRA = "pip install 'diffusion-sandbox[fid]'"
KID_SUBSETS = 100             # KID's random subsets (torchmetrics' and torch-fidelity's default)
KID_SUBSET_SIZE = 1000        # items per subset, each side (smaller sets use all their items)
KID_POOL = 10_000             # features kept per set for KID: a seeded uniform subset (bounded memory)
REFERENCE_SEED = 0            # seeds the reference pass (random augmentations of the split) and its KID pool
CACHE_FOLDER = "fid_reference"
CACHE_FORMAT = 1
# fmt: on


@dataclass(frozen=True)
class Features:
    """An image feature extractor: ``extract(images) -> (B, d)`` for ``(B, C, H, W)`` images in [-1, 1].

    ``name`` identifies the features in cache keys, so the statistics of two extractors never mix;
    ``batch_size`` is the most images one call gets.
    """

    name: str
    extract: Callable[[torch.Tensor], torch.Tensor]
    batch_size: int = 200


@dataclass
class Statistics:
    """What FID and KID need of one set of images: FID's moment sums (torchmetrics' states) and KID's pool."""

    # fmt: off
    total: torch.Tensor        # (d,) float64: sum of the features
    outer: torch.Tensor        # (d, d) float64: sum of their outer products
    count: int                 # number of images
    pool: torch.Tensor         # (k, d) float32: a seeded uniform subset of the features, k <= KID_POOL
    # fmt: on


# ------------------------------------------------------------------------------------------------ Inception


def hub_weights() -> Path:
    """Where torch-fidelity looks for (and downloads) the weights: torch hub's cache (``$TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def _needs(metrics: Sequence[str], what: str) -> str:
    return f"recipe key 'eval.metrics': {list(metrics)!r} needs {what}"


def inception_weights(metrics: Sequence[str] = ("fid",)) -> Path:
    """The Inception-v3 weights file (``$SANDBOX_INCEPTION_WEIGHTS``, else torch hub's cache), checked.

    Raises :class:`RecipeError` (exit 2) naming the file, the URL and the destination when the ``fid``
    extra is not installed or the file is missing or unreadable: nothing is downloaded here.
    """
    missing = [name for name in ("torchmetrics", "torch_fidelity") if importlib.util.find_spec(name) is None]
    env = os.environ.get(WEIGHTS_ENV)
    path = Path(env).expanduser() if env else hub_weights()
    where = f"{path} (${WEIGHTS_ENV})" if env else str(path)
    fetch = f"on a machine with internet, download it (curl -L -O {WEIGHTS_URL}) and copy it to {path} on this machine"
    if not env:
        fetch += f" (or anywhere, and set {WEIGHTS_ENV} to its path)"
    if missing:
        weights = "" if path.is_file() else f"; then the weights file {WEIGHTS_FILE}: {fetch}"
        extra = f"the optional fid extra (torchmetrics with torch-fidelity; missing: {', '.join(missing)})"
        raise RecipeError(
            _needs(metrics, extra) + f": {EXTRA} (from a checkout: pip install -e '.[fid]'; offline: pip download "
            f"'torchmetrics[image]' on a machine with internet and pip install the wheels){weights}"
        )
    if not path.is_file():
        raise RecipeError(
            _needs(metrics, f"the Inception-v3 weights file {WEIGHTS_FILE}, which is not at {where}")
            + f"; nothing is downloaded during a run: {fetch}"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        problem = "" if tuple(state["fc.weight"].shape) == (1008, 2048) else "its fc.weight is not 1008 x 2048"
    except Exception as exc:  # truncated, not a state dict, pickled code: all unusable
        problem = f"it does not load as a state dict of tensors: {type(exc).__name__}"
    if problem:
        raise RecipeError(
            _needs(metrics, f"the Inception-v3 weights file {WEIGHTS_FILE}, but {where} is not a readable copy")
            + f" ({problem}); download it again: {fetch}"
        )
    return path


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] as 8-bit values, ``round((x + 1) * 127.5)`` (NaN as 0, clamped), shape kept."""
    return ((images.float().nan_to_num(0.0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def inception(device: torch.device) -> Features:
    """torchmetrics' Inception-v3 2048 pool features, with TensorFlow 1.x's bilinear resize to 299 x 299."""
    path = inception_weights()
    from torchmetrics.image.fid import NoTrainInceptionV3

    net = NoTrainInceptionV3(
        name="inception-v3-compat",
        features_list=["2048"],
        feature_extractor_weights_path=str(path),
        antialias=False,  # the original FID code's resize, not torchmetrics' antialiased default
    ).to(device)

    @torch.no_grad()
    def extract(images: torch.Tensor) -> torch.Tensor:
        pixels = to_uint8(images).to(device)
        if pixels.shape[1] == 1:
            pixels = pixels.expand(-1, 3, -1, -1)  # grey as RGB
        return net(pixels)

    return Features(f"inception-v3-compat/pool3-2048/tf1-bilinear-299/{WEIGHTS_FILE}", extract)


def require(metrics: Sequence[str], shape: Sequence[int]) -> None:
    """Check before any work that ``metrics`` can be computed: image data, the extra and the weights."""
    if not metrics:
        return
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise RecipeError(
            _needs(metrics, f"images of shape (C, H, W) with 1 or 3 channels; the dataset gives {tuple(shape)}")
        )
    inception_weights(metrics)


# ------------------------------------------------------------------------------------------------ statistics


class _Given(torch.nn.Module):
    """The identity as torchmetrics' feature network: the features are extracted before the metric sees them."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _fid_metric(num_features: int) -> Any:
    from torchmetrics.image.fid import FrechetInceptionDistance

    # sync_on_compute=False: under torchrun only rank 0 scores; a sync would wait for the others forever
    return FrechetInceptionDistance(feature=_Given(num_features), reset_real_features=False, sync_on_compute=False)


def batches(images: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    """``images`` in slices of ``size`` (views: nothing is copied)."""
    for start in range(0, len(images), size):
        yield images[start : start + size]


def statistics(
    features: Features, images: Iterable[torch.Tensor], total: int, *, seed: int = REFERENCE_SEED, bar: Any = None
) -> Statistics:
    """Stream ``total`` images, batch by batch, into :class:`Statistics`: only the moments and the pool stay.

    ``bar``: a ``(progress, task)`` pair advanced by each batch's size.
    """
    keep = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:KID_POOL].sort().values
    metric, pool, seen = None, [], 0
    for batch in images:
        feats = features.extract(batch)
        if feats.ndim != 2 or len(feats) != len(batch):
            raise SandboxError(
                f"feature extractor '{features.name}' returned shape {tuple(feats.shape)} for {len(batch)} "
                "images; expected (images, features)"
            )
        if metric is None:
            metric = _fid_metric(feats.shape[1]).to(feats.device)
        metric.update(feats, real=True)  # torchmetrics' float64 moment sums
        rows = keep[(keep >= seen) & (keep < seen + len(feats))] - seen
        pool.append(feats[rows.to(feats.device)].float().cpu())
        seen += len(feats)
        if bar is not None:
            bar[0].advance(bar[1], len(batch))
    if metric is None or seen != total:
        raise SandboxError(f"expected {total} images for the features, got {seen}")
    return Statistics(
        total=metric.real_features_sum.cpu(),
        outer=metric.real_features_cov_sum.cpu(),
        count=int(metric.real_features_num_samples),
        pool=torch.cat(pool),
    )


def frechet_distance(reference: Statistics, other: Statistics) -> Optional[float]:
    """FID between two sets' statistics, by torchmetrics' ``FrechetInceptionDistance`` (None below 2 items)."""
    if reference.count < 2 or other.count < 2:
        return None
    metric = _fid_metric(len(reference.total))
    metric.real_features_sum = reference.total.double()
    metric.real_features_cov_sum = reference.outer.double()
    metric.real_features_num_samples = torch.tensor(reference.count)
    metric.fake_features_sum = other.total.double()
    metric.fake_features_cov_sum = other.outer.double()
    metric.fake_features_num_samples = torch.tensor(other.count)
    metric.orig_dtype = torch.float64  # what update() would record: the result's dtype
    with warnings.catch_warnings():  # "compute before update": the states were set, not updated
        warnings.simplefilter("ignore", UserWarning)
        return float(metric.compute())


def kernel_distance(reference: Statistics, other: Statistics, *, seed: int = REFERENCE_SEED) -> tuple[Any, Any]:
    """KID's mean and standard deviation over subsets, by torchmetrics' ``KernelInceptionDistance`` (seeded).

    Subsets of :data:`KID_SUBSET_SIZE` (or the smaller pool's size) are drawn from the two pools; None, None
    below 2 items.
    """
    size = min(KID_SUBSET_SIZE, len(reference.pool), len(other.pool))
    if size < 2:
        return None, None
    from torchmetrics.image.kid import KernelInceptionDistance

    with warnings.catch_warnings():  # "saves all features": only the bounded pools are given
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(
            feature=_Given(reference.pool.shape[1]), subsets=KID_SUBSETS, subset_size=size, sync_on_compute=False
        )
    metric.update(reference.pool.double(), real=True)
    metric.update(other.pool.double(), real=False)
    with torch.random.fork_rng(devices=[]):  # its subsets come from the global generator
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


# ------------------------------------------------------------------------------------------------ the reference


def _items(split: Any, start: int, stop: int) -> torch.Tensor:
    from sandbox.protocols import first_tensor

    return torch.stack([first_tensor(split[i]) for i in range(start, stop)]).float()


def reference_key(dataset: dict[str, Any], data: DataSplits, features: Features) -> dict[str, Any]:
    """Everything the training split's reference statistics depend on (hashed into the cache file's name)."""
    n = len(data.train)
    with torch.random.fork_rng(devices=[]):  # the same draw of any random augmentation every time
        torch.manual_seed(REFERENCE_SEED)
        probe = [_items(data.train, i, i + 1) for i in sorted({0, n // 3, 2 * n // 3, n - 1})]
    fingerprint = hashlib.sha256(b"".join(p.numpy().tobytes() for p in probe)).hexdigest()
    return {
        "format": CACHE_FORMAT,
        "dataset": dataset,
        "split": "train",
        "items": n,
        "shape": list(data.shape),
        "fingerprint": fingerprint,
        "features": features.name,
        "kid_pool": KID_POOL,
        "seed": REFERENCE_SEED,
    }


def cache_path(folder: Path, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(key["dataset"].get("name", "data")))
    return folder / f"{name}-{digest}.pt"


def load_cached(path: Path, key: dict[str, Any]) -> Optional[Statistics]:
    """The statistics in ``path`` if it holds them for ``key``; None (with a warning) if torn or foreign."""
    if not path.exists():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved["key"] != json.dumps(key, sort_keys=True, default=str):
            raise ValueError("it was written for other data or features")
        stats = Statistics(saved["total"], saved["outer"], int(saved["count"]), saved["pool"])
        d = len(stats.total)
        if stats.outer.shape != (d, d) or stats.pool.ndim != 2 or stats.pool.shape[1] != d or stats.count < 1:
            raise ValueError("its tensors do not fit together")
    except Exception as exc:  # truncated, not a torch file, wrong keys: all mean "compute again"
        warnings.warn(
            f"{path} is unreadable ({type(exc).__name__}: {exc}); computing the reference statistics again",
            stacklevel=2,
        )
        return None
    return stats


def reference(
    data: DataSplits,
    dataset: dict[str, Any],
    features: Features,
    fallback_dir: Path,
    console: Optional[Console] = None,
) -> tuple[Statistics, Path]:
    """The training split's statistics, from the cache or computed once and cached; returns them and the file.

    The cache folder is ``data.cache_dir/fid_reference`` or, when the dataset gives none, ``fallback_dir``.
    """
    from sandbox.console import console as default_console
    from sandbox.console import counter

    console = console or default_console
    folder = Path(data.cache_dir) / CACHE_FOLDER if data.cache_dir else Path(fallback_dir)
    key = reference_key(dataset, data, features)
    path = cache_path(folder, key)
    cached = load_cached(path, key)
    if cached is not None:
        return cached, path
    n = len(data.train)
    console.print(f"computing reference statistics of the {n:,} training items (once; cached in {path})")
    with torch.random.fork_rng(devices=[]), counter(console, transient=True) as progress:
        torch.manual_seed(REFERENCE_SEED)
        size = features.batch_size
        chunks = (_items(data.train, s, min(s + size, n)) for s in range(0, n, size))
        stats = statistics(features, chunks, n, bar=(progress, progress.add_task("reference features", total=n)))
    saved = {
        "key": json.dumps(key, sort_keys=True, default=str),
        "total": stats.total,
        "outer": stats.outer,
        "count": torch.tensor(stats.count),
        "pool": stats.pool,
    }
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda handle: torch.save(saved, handle))
    except (OSError, SandboxError) as exc:
        console.print(f"[yellow]warning:[/] could not cache the reference statistics ({exc}); they are recomputed")
    return stats, path


# ------------------------------------------------------------------------------------------------ the metrics


def image_metrics(
    metrics: Sequence[str],
    data: DataSplits,
    dataset: dict[str, Any],
    sets: dict[str, torch.Tensor],
    *,
    device: torch.device,
    fallback_dir: Path,
    console: Optional[Console] = None,
    features: Optional[Features] = None,
) -> dict[str, Any]:
    """``metrics`` (fid, kid) of each named set of images against the training split's reference.

    ``sets`` maps a name (``generated``, ``real_heldout``) to images ``(N, C, H, W)`` in [-1, 1], whose
    features are streamed in batches. ``dataset`` is the recipe's dataset section (part of the cache key).
    Returns ``{name: {metric: value}}`` plus ``image_metrics``: the features, the reference's size and
    cache file, each set's size and KID's standard deviation over subsets.
    """
    from sandbox.console import console as default_console
    from sandbox.console import counter

    console = console or default_console
    features = features or inception(device)
    ref, path = reference(data, dataset, features, fallback_dir, console)
    out: dict[str, Any] = {name: {} for name in sets}
    info: dict[str, Any] = {
        "features": features.name,
        "reference": {"split": "train", "items": ref.count, "cache": str(path)},
        "kid_subsets": KID_SUBSETS,
    }
    for name, images in sets.items():
        with counter(console, transient=True) as progress:
            task = progress.add_task(f"features ({name.replace('_', ' ')})", total=len(images))
            stats = statistics(features, batches(images, features.batch_size), len(images), bar=(progress, task))
        info[name] = {"items": stats.count}
        if "fid" in metrics:
            out[name]["fid"] = frechet_distance(ref, stats)
        if "kid" in metrics:
            out[name]["kid"], info[name]["kid_std"] = kernel_distance(ref, stats)
            info[name]["kid_subset_size"] = min(KID_SUBSET_SIZE, len(ref.pool), len(stats.pool))
    out["image_metrics"] = info
    return out
