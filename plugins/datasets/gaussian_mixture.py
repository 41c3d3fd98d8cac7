"""A mixture of isotropic Gaussians: data whose exact denoiser is known in closed form.

``x_0 ~ sum_k w_k N(mu_k, s_k^2 I)``. Under ``x_t = alpha x_0 + sigma eps`` the
noisy marginal is again a mixture, ``x_t ~ sum_k w_k N(alpha mu_k, (alpha^2 s_k^2 +
sigma^2) I)``, and the posterior of each component is Gaussian, so

    E[x_0 | x_t] = sum_k r_k(x_t) (mu_k + g_k (x_t - alpha mu_k)),
    g_k = alpha s_k^2 / (alpha^2 s_k^2 + sigma^2),

with responsibilities ``r_k`` proportional to ``w_k N(x_t; alpha mu_k,
(alpha^2 s_k^2 + sigma^2) I)`` (Bishop 2006, eq. 2.116 and 9.13). That is the
minimum-MSE denoiser every network is trained to approximate, so the
``oracle`` denoiser built on it isolates the sampler's and the schedule's own
error from the network's.

Each component is a class ("component 0", ...): items are ``(x, k)`` with
``k`` the component drawn, and ``exact_x0(x_t, alpha, sigma, labels)`` is the
class-conditional ``E[x_0 | x_t, k] = mu_k + g_k (x_t - alpha mu_k)`` (the one
component's posterior mean; the label ``K``, the null class, keeps the mixture's).

``evaluate`` scores samples against the exact mixture: the sliced Wasserstein
distance to a large exact draw, and the 2-Wasserstein distance between the
Gaussian fitted to the samples and the mixture's exact mean and covariance.
``evaluate_classes`` scores samples drawn for given classes by each class's
distance to its exact component.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch
from sandbox_plugins.datasets.items import TensorItems
from sandbox_plugins.datasets.metrics import random_directions, sliced_wasserstein
from sandbox_plugins.datasets.params import GaussianMixtureParams

from sandbox.protocols import DataSplits

# fmt: off
REFERENCE_SIZE = 20_000  # points of the exact draw that the sliced Wasserstein distance compares against
CLASS_REFERENCE_SIZE = 2_000  # points of each component's exact draw that evaluate_classes compares against
PROJECTIONS = 128        # directions of the sliced Wasserstein distance (those of metrics.sliced_wasserstein)
# fmt: on


def _stream_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for one named stream (means, train, val, reference) of one recipe seed."""
    digest = hashlib.sha256(f"gaussian_mixture:{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a positive semi-definite matrix through ``torch.linalg.eigh``."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def gaussian_w2(m1: torch.Tensor, c1: torch.Tensor, m2: torch.Tensor, c2: torch.Tensor) -> float:
    """2-Wasserstein distance between N(m1, C1) and N(m2, C2) (Dowson & Landau 1982).

    ``W2^2 = ||m1 - m2||^2 + tr(C1 + C2 - 2 (C2^1/2 C1 C2^1/2)^1/2)``.
    """
    root2 = _sqrtm_psd(c2)
    cross = torch.linalg.eigvalsh(root2 @ c1 @ root2).clamp(min=0).sqrt().sum()
    w2_sq = (m1 - m2).pow(2).sum() + torch.trace(c1) + torch.trace(c2) - 2 * cross
    return float(w2_sq.clamp(min=0).sqrt())


class GaussianMixture:
    """``sum_k w_k N(mu_k, s_k^2 I)`` over items of ``shape``, held in float64."""

    def __init__(self, means: torch.Tensor, stds: torch.Tensor, weights: torch.Tensor, shape: Sequence[int]):
        # fmt: off
        self.means = means.double()                 # [K, D]
        self.stds = stds.double()                   # [K]
        self.weights = weights.double() / weights.double().sum()  # [K]
        self.shape = tuple(int(s) for s in shape)
        self.dim = self.means.shape[1]
        self.log_weights = self.weights.log()
        # fmt: on

    @property
    def components(self) -> int:
        return int(self.means.shape[0])

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` exact draws, ``float32 [n, *shape]``."""
        return self.sample_labelled(n, generator)[0]

    def sample_labelled(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` exact draws as :meth:`sample` makes them (the same generator calls) and the component of each,
        ``(float32 [n, *shape], int64 [n])``."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (self.means[k] + self.stds[k, None] * z).float().reshape(n, *self.shape), k

    def sample_component(self, k: int, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` exact draws of component ``k`` alone, ``float32 [n, *shape]``."""
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (self.means[k] + self.stds[k] * z).float().reshape(n, *self.shape)

    def mean(self) -> torch.Tensor:
        """``E[x_0] = sum_k w_k mu_k``, ``[D]``."""
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        """``Cov[x_0] = sum_k w_k (s_k^2 I + mu_k mu_k^T) - m m^T``, ``[D, D]``."""
        m = self.mean()
        second = (self.means.T * self.weights) @ self.means
        second = second + torch.eye(self.dim, dtype=torch.float64) * (self.weights @ self.stds**2)
        return second - torch.outer(m, m)

    def exact_x0(self, x_t: torch.Tensor, alpha, sigma, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``E[x_0 | x_t]`` for ``x_t = alpha x_0 + sigma eps``, in ``x_t``'s shape and dtype.

        ``alpha`` and ``sigma`` are numbers or tensors that broadcast against
        ``x_t`` (shape ``(B, 1, ...)``, one value per item). Computed in float64
        with log-sum-exp responsibilities, so it stays finite for sigma -> 0
        (where it returns ``x_t / alpha``), for alpha -> 0 (the mixture mean) and
        for variance-exploding noise levels (sigma ~ 80).

        ``labels`` (``int64 [B]`` in ``[0, K]``) conditions each item on its component:
        ``E[x_0 | x_t, k] = mu_k + g_k (x_t - alpha mu_k)``, the responsibilities replaced by
        the one-hot of ``k``; an item labelled ``K`` (the null class) gets ``E[x_0 | x_t]``,
        computed exactly as without ``labels``.
        """
        # fmt: off
        b = x_t.shape[0]
        x = x_t.reshape(b, -1).to(torch.float64).cpu()  # differentiable: the likelihood's divergence
        a = self._per_item(alpha, b)                # [B, 1]
        s = self._per_item(sigma, b)                # [B, 1]
        means, s2 = self.means, self.stds**2        # [K, D], [K]
        var = a**2 * s2 + s**2                      # [B, K]: variance of x_t given component k
        # fmt: on
        # ||x - alpha mu_k||^2, expanded so no [B, K, D] tensor is formed
        # fmt: off
        dist2 = ((x * x).sum(1, keepdim=True) - 2 * a * (x @ means.T) + a**2 * (means * means).sum(1)).clamp(min=0)
        log_r = self.log_weights - 0.5 * self.dim * var.log() - 0.5 * dist2 / var
        r = torch.softmax(log_r, dim=1)             # [B, K] posterior responsibilities
        gain = a * s2 / var                         # [B, K]: g_k
        # fmt: on
        if labels is not None:
            r = self._condition(r, labels)
        # sum_k r_k (mu_k + g_k (x - alpha mu_k)) = (sum_k r_k g_k) x + sum_k r_k (1 - alpha g_k) mu_k
        x0 = (r * gain).sum(1, keepdim=True) * x + (r * (1 - a * gain)) @ means
        return x0.to(device=x_t.device, dtype=x_t.dtype).reshape(x_t.shape)

    def log_density(self, x: torch.Tensor, noise: float = 0.0) -> torch.Tensor:
        """``log sum_k w_k N(x; mu_k, (s_k^2 + noise^2) I)`` per item (float64 nats): the exact log-density of the
        mixture, smoothed by ``N(0, noise^2 I)`` (the law of ``x_0 + noise eps``)."""
        flat = x.detach().reshape(len(x), -1).to(torch.float64).cpu()
        var = self.stds**2 + noise**2  # [K]
        dist2 = ((flat * flat).sum(1, keepdim=True) - 2 * flat @ self.means.T + (self.means**2).sum(1)).clamp(min=0)
        log_k = self.log_weights - 0.5 * self.dim * torch.log(2 * math.pi * var) - 0.5 * dist2 / var
        return torch.logsumexp(log_k, dim=1)

    def _condition(self, r: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The responsibilities ``r [B, K]`` with each labelled row replaced by its component's one-hot."""
        k = self.components
        labels = torch.as_tensor(labels).detach().to(device="cpu", dtype=torch.int64).reshape(-1)
        if labels.shape != (len(r),):
            raise ValueError(f"labels must have one entry per item ({len(r)}), got {labels.numel()}")
        if len(labels) and not bool(((labels >= 0) & (labels <= k)).all()):
            raise ValueError(f"labels must lie in [0, {k}] ({k}: the null class), got {labels.min()}..{labels.max()}")
        one_hot = torch.nn.functional.one_hot(labels.clamp(max=k - 1), k).to(r.dtype)
        return torch.where((labels == k)[:, None], r, one_hot)

    @staticmethod
    def _per_item(value, b: int) -> torch.Tensor:
        value = torch.as_tensor(value).detach().to(torch.float64).cpu()
        if value.numel() == 1:
            return value.reshape(1, 1).expand(b, 1)
        return value.reshape(b, -1)[:, :1]

    def evaluate(self, samples: torch.Tensor, reference: Reference) -> dict[str, float]:
        """``swd`` to the exact ``reference`` draw and ``gauss_w2`` of the fitted Gaussian to the exact moments."""
        x = samples.detach().reshape(len(samples), -1).double().cpu()
        out = {"swd": reference.sliced_wasserstein(x)}
        if bool(torch.isfinite(x).all()) and len(x) > 1:
            out["gauss_w2"] = gaussian_w2(
                x.mean(0), torch.cov(x.T).reshape(self.dim, self.dim), self.mean(), self.covariance()
            )
        else:
            out["gauss_w2"] = math.nan
        return out

    def evaluate_classes(
        self, samples: torch.Tensor, labels: torch.Tensor, references: dict[int, torch.Tensor]
    ) -> dict[str, float]:
        """``class_swd``: each class's distance to its exact component, averaged over the classes in ``labels``.

        For each class ``k`` present, the sliced Wasserstein distance
        (:func:`metrics.sliced_wasserstein`) between the samples drawn for ``k``
        and ``references[k]``, an exact draw of component ``k``. Labels outside
        ``[0, K)`` (the null class) are not scored; with none left it is NaN.
        """
        x = samples.detach().reshape(len(samples), -1).double().cpu()
        labels = torch.as_tensor(labels).detach().to(device="cpu", dtype=torch.int64).reshape(-1)
        if labels.shape != (len(x),):
            raise ValueError(f"labels must have one entry per sample ({len(x)}), got {labels.numel()}")
        present = [int(k) for k in labels.unique() if 0 <= int(k) < self.components]
        distances = [sliced_wasserstein(x[labels == k], references[k], n_projections=PROJECTIONS) for k in present]
        return {"class_swd": sum(distances) / len(distances) if distances else math.nan}


class Reference:
    """A large exact draw, with what the sliced Wasserstein distance needs of it computed once.

    :meth:`sliced_wasserstein` is ``metrics.sliced_wasserstein(x, points)``
    (the same directions, the same ``M = len(points)`` quantile levels, the
    same linear interpolation between order statistics) for up to ``M``
    samples. The squared gap at level ``j`` is
    ``((1 - f_j) s_k + f_j s_{k+1} - r_j)^2`` with ``k`` the order statistic
    below it, so summed over the levels of each ``k`` it is a quadratic in
    ``(s_k, s_{k+1})`` whose coefficients depend only on ``N`` and the
    reference: cached per ``N``, a call costs ``O(P N)`` instead of
    ``O(P M)``, and the hundreds of cells of ``sandbox doctor`` stay cheap.
    """

    def __init__(self, points: torch.Tensor):
        self.points = points.reshape(len(points), -1).double()
        self.theta = random_directions(PROJECTIONS, self.points.shape[1], seed=0)
        m = len(self.points)
        self.levels = (torch.arange(m, dtype=torch.float64) + 0.5) / m
        ordered = (self.theta @ self.points.T).sort(dim=1).values
        position = self.levels * (m - 1)
        low = position.floor().long()
        high = (low + 1).clamp(max=m - 1)
        self.quantiles = ordered[:, low] * (1 - (position - low)) + ordered[:, high] * (position - low)  # [P, M]
        self._coefficients: dict[int, tuple[torch.Tensor, ...]] = {}

    def _coefficients_for(self, n: int) -> tuple[torch.Tensor, ...]:
        if n not in self._coefficients:
            position = self.levels * (n - 1)
            low = position.floor().long().clamp(max=n - 1)
            frac = position - low
            r = self.quantiles

            def per_k(values: torch.Tensor) -> torch.Tensor:
                out = torch.zeros(values.shape[:-1] + (n,), dtype=torch.float64)
                return out.index_add_(-1, low, values)

            self._coefficients[n] = (
                per_k((1 - frac) ** 2),
                per_k(frac**2),
                per_k(2 * frac * (1 - frac)),
                per_k(-2 * (1 - frac) * r),
                per_k(-2 * frac * r),
                (r**2).sum(),
            )
        return self._coefficients[n]

    def sliced_wasserstein(self, x: torch.Tensor) -> float:
        x = x.detach().reshape(len(x), -1).double().cpu()
        if len(x) == 0 or len(x) > len(self.points) or x.shape[1] != self.points.shape[1]:
            return sliced_wasserstein(x, self.points, n_projections=PROJECTIONS)
        # fmt: off
        x = torch.nan_to_num(x, nan=0.0, posinf=1e6, neginf=-1e6)
        s = (self.theta @ x.T).sort(dim=1).values                     # [P, N] order statistics
        s_next = torch.cat([s[:, 1:], s[:, -1:]], dim=1)              # s_{k+1}, the last one repeated
        a, b, c, d, e, r2 = self._coefficients_for(len(x))
        total = (a * s**2 + b * s_next**2 + c * s * s_next + d * s + e * s_next).sum() + r2
        # fmt: on
        return float(total.clamp(min=0) / self.quantiles.numel()) ** 0.5


def mixture(params: GaussianMixtureParams) -> GaussianMixture:
    """The mixture a recipe section describes (``GaussianMixtureParams`` checked the lengths and ranges)."""
    shape, k = params.shape, params.components
    dim = math.prod(shape)
    if params.means is not None:
        means = torch.tensor(params.means, dtype=torch.float64)
    elif dim == 2:
        angle = 2 * math.pi * torch.arange(k, dtype=torch.float64) / k
        means = params.radius * torch.stack([angle.cos(), angle.sin()], dim=1)
    else:
        g = torch.Generator().manual_seed(_stream_seed(params.seed, "means"))
        means = params.radius * (2 * torch.rand(k, dim, generator=g, dtype=torch.float64) - 1)
    stds = torch.tensor(params.stds if params.stds is not None else [params.std] * k, dtype=torch.float64)
    weights = torch.tensor(params.weights if params.weights is not None else [1.0] * k, dtype=torch.float64)
    return GaussianMixture(means, stds, weights, shape)


def build(params: GaussianMixtureParams) -> DataSplits:
    """Train and validation draws of the mixture, its exact denoiser, and scores against the exact mixture."""
    mix = mixture(params)

    def generator(stream: str) -> torch.Generator:
        return torch.Generator().manual_seed(_stream_seed(params.seed, stream))

    def split(n: int, stream: str) -> TensorItems:
        points, components = mix.sample_labelled(n, generator(stream))
        return TensorItems(points, labels=components)

    reference = Reference(mix.sample(REFERENCE_SIZE, generator("reference")))
    class_references: dict[int, torch.Tensor] = {}
    render = None
    if mix.shape == (2,):
        from sandbox_plugins.datasets.toy2d import render as render_2d

        render = render_2d

    def evaluate(samples: torch.Tensor) -> dict[str, float]:
        return mix.evaluate(samples, reference)

    def evaluate_classes(samples: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """Each class's distance to its exact component (``class_swd``, :meth:`GaussianMixture.evaluate_classes`)."""
        for k in range(mix.components):  # drawn on first use: a run that is not conditional never pays for them
            if k not in class_references:
                draw = mix.sample_component(k, CLASS_REFERENCE_SIZE, generator(f"class-reference-{k}"))
                class_references[k] = draw.reshape(CLASS_REFERENCE_SIZE, -1).double()
        return mix.evaluate_classes(samples, labels, class_references)

    stds = sorted({float(s) for s in mix.stds})
    return DataSplits(
        train=split(params.n_train, "train"),
        val=split(params.n_val, "val"),
        shape=mix.shape,
        render=render,
        evaluate=evaluate,
        exact_x0=mix.exact_x0,
        classes=[f"component {k}" for k in range(mix.components)],
        evaluate_classes=evaluate_classes,
        log_density=mix.log_density,
        description=(
            f"gaussian_mixture: {mix.means.shape[0]} components of shape {list(mix.shape)}, "
            f"std {', '.join(f'{s:g}' for s in stds)}: {params.n_train} train / {params.n_val} val items, "
            f"seed {params.seed}"
        ),
    )
