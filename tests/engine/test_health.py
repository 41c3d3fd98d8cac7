"""sample_health: finite, in-range samples pass; NaN or exploded samples are flagged as diverged."""

from __future__ import annotations

import math

import torch

from sandbox.engine.health import sample_health

REAL = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))


def test_samples_like_the_data_are_healthy():
    health = sample_health(torch.randn(400, 2, generator=torch.Generator().manual_seed(1)), REAL)
    assert health["finite_share"] == 1.0 and health["in_range_share"] > 0.99 and not health["diverged"]


def test_any_non_finite_sample_is_diverged():
    samples = torch.randn(100, 2)
    samples[3, 1] = math.nan
    health = sample_health(samples, REAL)
    assert health["finite_share"] == 0.99 and health["diverged"]


def test_exploded_samples_are_diverged():
    samples = 500 * torch.randn(100, 2, generator=torch.Generator().manual_seed(2))
    health = sample_health(samples, REAL)
    assert health["finite_share"] == 1.0 and health["in_range_share"] < 0.05 and health["diverged"]


def test_images_with_constant_pixels_are_judged_on_the_data_range():
    """Real digits have corner pixels that are always -1; samples off by a hair there are still in range."""
    real = torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    real[:, :, 0, 0] = -1.0
    samples = real[:100] + 0.01
    assert sample_health(samples, real)["in_range_share"] == 1.0
