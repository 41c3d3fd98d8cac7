"""Two-dimensional toy distributions for fast CPU experiments.

Each shape is drawn from its closed form with a seeded ``torch.Generator``,
shifted and scaled by fixed per-shape constants to zero mean and unit
variance per axis, then jittered by isotropic Gaussian noise of std
``noise``. Shapes follow the toy sets of Grathwohl et al. (2019, FFJORD:
checkerboard, 8 Gaussians), scikit-learn's ``make_moons`` and the 2-D Swiss roll
(the x-z plane of ``make_swiss_roll``, Marsland 2009).

Train, validation and the evaluation reference are three independent draws
(seeds derived from ``seed``). ``evaluate`` is the sliced Wasserstein distance
to the reference draw, so real validation points score the finite-sample
noise floor.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from functools import cache, partial

import torch
from sandbox_plugins.datasets.items import TensorItems
from sandbox_plugins.datasets.metrics import sliced_wasserstein
from sandbox_plugins.datasets.params import Toy2DParams

from sandbox.protocols import DataSplits

# fmt: off
REFERENCE_SIZE = 10_000  # points in the reference draw that evaluate compares against
EXTENT = 3.0             # render covers [-EXTENT, EXTENT]^2 (data units)
RESOLUTION = 256         # render side (pixels)
# fmt: on


def _moons(n: int, g: torch.Generator) -> torch.Tensor:
    """Two interleaved half circles, as ``sklearn.datasets.make_moons`` (t uniform instead of a grid)."""
    t = torch.rand(n, generator=g, dtype=torch.float64) * math.pi
    upper = torch.rand(n, generator=g) < 0.5
    x = torch.where(upper, t.cos(), 1 - t.cos())
    y = torch.where(upper, t.sin(), 0.5 - t.sin())
    return torch.stack([x, y], dim=1)


def _swissroll(n: int, g: torch.Generator) -> torch.Tensor:
    """The 2-D Swiss roll ``(t cos t, t sin t)``, t = 1.5 pi (1 + 2u), u uniform."""
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g, dtype=torch.float64))
    return torch.stack([t * t.cos(), t * t.sin()], dim=1)


def _checkerboard(n: int, g: torch.Generator) -> torch.Tensor:
    """Uniform on the 8 dark cells of a 4x4 board on [-2, 2]^2 (FFJORD's ``checkerboard``)."""
    x = torch.rand(n, generator=g, dtype=torch.float64) * 4 - 2
    row = torch.randint(0, 2, (n,), generator=g).double() * 2  # one of two cell rows per column parity
    y = torch.rand(n, generator=g, dtype=torch.float64) - row + (x.floor() % 2)
    return torch.stack([x, y], dim=1)


def _gaussians8(n: int, g: torch.Generator) -> torch.Tensor:
    """Eight point masses on the unit circle at angles k pi / 4; the jitter makes them Gaussians."""
    k = torch.randint(0, 8, (n,), generator=g).double()
    angle = k * math.pi / 4
    return torch.stack([angle.cos(), angle.sin()], dim=1)


SHAPES: dict[str, Callable[[int, torch.Generator], torch.Tensor]] = {  # keys: params.TOY_SHAPES, in order
    "moons": _moons,
    "swissroll": _swissroll,
    "checkerboard": _checkerboard,
    "gaussians8": _gaussians8,
}


def _stream_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for one named stream (train, val, reference) of one recipe seed."""
    digest = hashlib.sha256(f"toy2d:{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@cache
def standardisation(shape: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-axis mean and std of the noiseless shape, from a fixed 2^18-point draw (constants per shape)."""
    clean = SHAPES[shape](2**18, torch.Generator().manual_seed(0))
    return clean.mean(dim=0), clean.std(dim=0)


def sample(shape: str, n: int, noise: float, generator: torch.Generator) -> torch.Tensor:
    """``n`` points ``float32 [n, 2]`` of ``shape``: scaled to unit variance per axis, then jittered."""
    mean, std = standardisation(shape)
    points = (SHAPES[shape](n, generator) - mean) / std
    points = points + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return points.float()


def draw(params: Toy2DParams, n: int, stream: str) -> torch.Tensor:
    """The ``stream`` draw (train, val or reference) of the recipe's shape."""
    return sample(params.shape, n, params.noise, torch.Generator().manual_seed(_stream_seed(params.seed, stream)))


def render(samples: torch.Tensor, extent: float = EXTENT, resolution: int = RESOLUTION) -> torch.Tensor:
    """A ``[3, resolution, resolution]`` density picture in [0, 1] of ``samples [B, 2]``.

    A 2-D histogram on the fixed square ``[-extent, extent]^2`` (y up), shaded
    ``log(1 + count) / log(1 + max count)`` in dark blue on white, with light grey
    lines at the integer coordinates. Points outside the square are not drawn.
    """
    xy = torch.nan_to_num(samples.detach().reshape(len(samples), -1)[:, :2].double().cpu(), nan=1e9)
    col = ((xy[:, 0] + extent) / (2 * extent) * resolution).floor().long()
    row = ((extent - xy[:, 1]) / (2 * extent) * resolution).floor().long()
    inside = (col >= 0) & (col < resolution) & (row >= 0) & (row < resolution)
    counts = torch.bincount(row[inside] * resolution + col[inside], minlength=resolution**2).double()
    density = counts.log1p() / max(math.log1p(float(counts.max())), 1e-12)
    density = density.reshape(resolution, resolution)
    image = torch.ones(3, resolution, resolution, dtype=torch.float64)
    for tick in range(-math.floor(extent), math.floor(extent) + 1):
        pixel = min(int((tick + extent) / (2 * extent) * resolution), resolution - 1)
        shade = 0.75 if tick == 0 else 0.9
        image[:, :, pixel] = shade
        image[:, resolution - 1 - pixel, :] = shade
    ink = torch.tensor([0.05, 0.15, 0.55], dtype=torch.float64).view(3, 1, 1)
    image = image * (1 - density) + ink * density
    return image.float().clamp(0.0, 1.0)


def _evaluate(samples: torch.Tensor, *, reference: torch.Tensor) -> dict[str, float]:
    return {"swd": sliced_wasserstein(samples.reshape(len(samples), -1), reference)}


def build(params: Toy2DParams) -> DataSplits:
    """Train and validation draws of one toy shape as ``(2,)`` tensors, scored by sliced Wasserstein distance."""
    reference = draw(params, REFERENCE_SIZE, "reference")
    return DataSplits(
        train=TensorItems(draw(params, params.n_train, "train")),
        val=TensorItems(draw(params, params.n_val, "val")),
        shape=(2,),
        render=render,
        evaluate=partial(_evaluate, reference=reference),
        description=(
            f"toy2d '{params.shape}' (unit variance per axis, noise {params.noise}): "
            f"{params.n_train} train / {params.n_val} val points, seed {params.seed}"
        ),
    )
