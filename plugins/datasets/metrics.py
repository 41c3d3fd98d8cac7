"""Distances between sample sets, shared by the dataset plugins' ``evaluate``."""

from __future__ import annotations

import torch


def random_directions(n: int, dim: int, seed: int = 0) -> torch.Tensor:
    """``n`` unit vectors in ``R^dim``, uniform on the sphere, the same for the same seed."""
    theta = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return theta / theta.norm(dim=1, keepdim=True)


def _quantiles(values: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Empirical quantile function of each column of ``values [N, P]`` at ``levels [M]`` (linear interpolation)."""
    ordered = values.sort(dim=0).values
    position = levels * (len(ordered) - 1)
    low = position.floor().long()
    high = (low + 1).clamp(max=len(ordered) - 1)
    frac = (position - low).unsqueeze(1)
    return ordered[low] * (1 - frac) + ordered[high] * frac


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, n_projections: int = 128, p: int = 2, seed: int = 0) -> float:
    """Sliced Wasserstein distance ``SW_p`` between point sets ``x [N, D]`` and ``y [M, D]``.

    ``SW_p(x, y) = (E_theta W_p^p(theta.x, theta.y))^(1/p)``, averaged over
    ``n_projections`` fixed random directions theta (Rabin et al., 2011,
    "Wasserstein Barycenter and its Application to Texture Mixing";
    Bonneel et al., 2015, "Sliced and Radon Wasserstein Barycenters of
    Measures"). Each one-dimensional ``W_p`` compares the two sorted
    projections through their quantile functions, evaluated at
    ``max(N, M)`` mid-point levels, so ``N`` and ``M`` may differ. The
    directions depend only on ``seed`` and ``D``, so scores are comparable
    between runs. It is in data units and is 0 only for equal distributions;
    two finite samples of one distribution score a small positive noise floor
    that shrinks like ``1/sqrt(N)``.
    """
    x = torch.nan_to_num(x.detach().reshape(len(x), -1).double().cpu(), nan=0.0, posinf=1e6, neginf=-1e6)
    y = torch.nan_to_num(y.detach().reshape(len(y), -1).double().cpu(), nan=0.0, posinf=1e6, neginf=-1e6)
    if x.shape[1] != y.shape[1] or len(x) == 0 or len(y) == 0:
        raise ValueError(
            f"sliced_wasserstein needs two non-empty sets of equal dimension, got {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )
    theta = random_directions(n_projections, x.shape[1], seed)
    m = max(len(x), len(y))
    levels = (torch.arange(m, dtype=torch.float64) + 0.5) / m
    gap = _quantiles(x @ theta.T, levels) - _quantiles(y @ theta.T, levels)
    return float(gap.abs().pow(p).mean().pow(1.0 / p))
