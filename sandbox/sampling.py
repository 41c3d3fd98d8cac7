"""The Gaussian algebra samplers share, and their budgets of network evaluations (NFE); the sampler protocol
itself is :class:`sandbox.protocols.Sampler`, the time grids they step on are :mod:`sandbox.grids`.

ODE samplers step in the scale-free coordinates of Karras et al. (2022,
eq. 4 and section 4): ``x~ = x / alpha``, ``sigma~ = sigma / alpha``, where
``x~ = x_0 + sigma~ eps`` is variance exploding for every schedule and the
probability-flow ODE reads ``dx~ / dsigma~ = (x~ - D(x; t)) / sigma~``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, Optional, Union

import torch

from sandbox.grids import grid_times, lowest_time, sampler_grid
from sandbox.protocols import Callback, Denoise, Schedule
from sandbox.registry import Component, Registry, use_registry


def scalars(schedule: Schedule, t: float) -> tuple[float, float]:
    """``(alpha(t), sigma(t))`` as float64 Python numbers."""
    alpha, sigma = schedule.alpha_sigma(torch.tensor([t], dtype=torch.float64))
    return float(alpha.double()), float(sigma.double())


def scale_free(schedule: Schedule, t: float) -> tuple[float, float]:
    """``(alpha(t), sigma~(t) = sigma(t) / alpha(t))``; alpha must be positive wherever a sampler steps."""
    alpha, sigma = scalars(schedule, t)
    if not alpha > 0:
        raise ValueError(
            f"the schedule has alpha({t:g}) = {alpha:g}; stepping in x / alpha needs alpha > 0 "
            "(clip alpha_bar away from 0 at t = 1)"
        )
    return alpha, sigma / alpha


def t_from_sigma_tilde(schedule: Schedule, sigma_tilde: float) -> float:
    """The time at which ``sigma~ = sigma_tilde``, by :meth:`Schedule.t_from_log_snr` (``lambda = -2 ln sigma~``)."""
    return float(schedule.t_from_log_snr(torch.tensor([-2.0 * math.log(sigma_tilde)], dtype=torch.float64)))


def grid_steps(schedule: Schedule, steps: int) -> int:
    """How many steps ``schedule.timesteps(steps)`` really has (a discrete grid may have fewer)."""
    return len(schedule.timesteps(steps)) - 1


# ------------------------------------------------------------------------------------------------ samplers on a grid


class OnGrid:
    """What a sampler on a time grid shares: ``params.steps`` and ``params.grid`` give :meth:`times`
    (:mod:`sandbox.grids` resolves the grid).

    Subclass it (``__init__`` resolves the grid, so an unknown name fails when
    the sampler is built, before any training) and step on ``self.times(schedule)``;
    :meth:`nfe` is one network evaluation per step, to override where a step costs more.
    """

    def __init__(self, params: Any):
        self.params = params
        self.grid = sampler_grid(params)

    def num_steps(self, schedule: Schedule) -> int:
        return int(self.params.steps)

    def times(self, schedule: Schedule) -> list[float]:
        """The times the sampler steps through: ``grid(schedule, steps)``."""
        return grid_times(self.grid, schedule, self.num_steps(schedule))

    def nfe(self, schedule: Schedule) -> int:
        """One network evaluation per step of the grid."""
        return len(self.times(schedule)) - 1

    def estimate(
        self,
        denoise: Denoise,
        x_t: torch.Tensor,
        t: float,
        i: int,
        callback: Optional[Callback] = None,
    ) -> torch.Tensor:
        """Step ``i``'s estimate of ``x_0`` at ``(x_t, t)``: clipped to [-1, 1] with ``params.clip_x0``, and
        reported to ``callback`` (``{"x", "i", "t", "denoised"}``)."""
        denoised = denoise(x_t, t)
        if self.params.clip_x0:
            denoised = denoised.clamp(-1.0, 1.0)
        if callback is not None:
            callback({"x": x_t, "i": i, "t": t, "denoised": denoised})
        return denoised


def prior(noise: torch.Tensor, schedule: Schedule, t_max: float) -> torch.Tensor:
    """``x_T``: the noise scaled to the marginal scale ``sqrt(alpha^2 + sigma^2)`` at ``t_max``."""
    alpha, sigma = scalars(schedule, t_max)
    return noise * (alpha**2 + sigma**2) ** 0.5


def transition(schedule: Schedule, t: float, s: float) -> tuple[float, float, float]:
    """Posterior ``q(x_s | x_t, x_0)`` for s < t (Kingma et al. 2021, eq. 33-34).

    Returns ``(coef_x0, coef_xt, var_small)`` with mean
    ``coef_x0 * x_0 + coef_xt * x_t``; ``var_small`` is DDPM's beta-tilde.
    The forward transition variance ``sigma_{t|s}^2`` (DDPM's beta) is
    :func:`forward_variance`.
    """
    alpha_t, sigma_t = scalars(schedule, t)
    alpha_s, sigma_s = scalars(schedule, s)
    var_ts = forward_variance(schedule, t, s)
    alpha_ts = alpha_t / alpha_s
    coef_xt = alpha_ts * sigma_s**2 / sigma_t**2
    coef_x0 = alpha_s * var_ts / sigma_t**2
    return coef_x0, coef_xt, var_ts * sigma_s**2 / sigma_t**2


def forward_variance(schedule: Schedule, t: float, s: float) -> float:
    """``sigma_{t|s}^2 = sigma_t^2 - (alpha_t / alpha_s)^2 sigma_s^2``, the variance of q(x_t | x_s)."""
    alpha_t, sigma_t = scalars(schedule, t)
    alpha_s, sigma_s = scalars(schedule, s)
    return max(sigma_t**2 - (alpha_t / alpha_s) ** 2 * sigma_s**2, 0.0)


def randn_like(x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


class BrownianPath:
    """One Brownian motion ``B`` per batch shape and schedule, fixed by ``seed``, in the signal-to-noise
    ratio ``v = 1 / sigma~^2 = alpha^2 / sigma^2``.

    :meth:`step` returns ``(B(v_s) - B(v_t)) / sqrt(v_s - v_t)``, a standard normal draw for the step from
    ``t`` to ``s``; the increments of any grid are sums of those of a finer one, so a stochastic sampler on
    two grids follows one noise path, and its output from the same starting noise converges as the steps
    shrink (strong convergence). The ratio is the variable in which the reverse SDE's noise is uniform:
    DPM-Solver++'s SDE step (eta = 1) adds ``sigma~_s sqrt(1 - e^{-2h}) z`` with ``h = ln(sigma~_t /
    sigma~_s)``, which is ``sigma~_s^2 sqrt(v_s - v_t) z``, so with ``z`` from this path a coarse step adds
    exactly what its fine steps add (``tests/core/test_brownian.py`` checks it to 1e-9). k-diffusion's
    ``BrownianTreeNoiseSampler`` does the same in sigma~. The path is torchsde's ``BrownianInterval`` as a
    Brownian tree (``halfway_tree``; Li et al. 2020, "Scalable Gradients for Stochastic Differential
    Equations"), whose value at a point does not depend on the order of the queries.
    """

    def __init__(self, seed: int):
        self.seed = seed
        self._paths: dict[tuple[Any, ...], Any] = {}

    def step(self, x: torch.Tensor, schedule: Schedule, t: float, s: float) -> torch.Tensor:
        import torchsde

        v_t, v_s = (scale_free(schedule, time)[1] ** -2 for time in (t, s))
        lo, hi = min(v_t, v_s), max(v_t, v_s)
        key = (tuple(x.shape), x.dtype, x.device, id(schedule))
        if key not in self._paths:  # up to the ratio at the schedule's lowest time, where every grid ends
            top = 2.0 * max(scale_free(schedule, lowest_time(schedule))[1] ** -2, hi)  # 2: room for rounding
            self._paths[key] = torchsde.BrownianInterval(  # halfway_tree: a point's value is one of the path,
                t0=0.0,  # whatever the order of the queries (without it, the splits follow the queries)
                t1=top,
                size=x.shape,
                dtype=x.dtype,
                device=x.device,
                entropy=self.seed,
                tol=top * 1e-12,
                halfway_tree=True,
            )
        if hi == lo:  # a step that does not move the ratio adds no noise
            return torch.zeros_like(x)
        return self._paths[key](lo, hi) / (hi - lo) ** 0.5


_PATH: ContextVar[Optional[BrownianPath]] = ContextVar("sandbox_brownian_path", default=None)


@contextlib.contextmanager
def brownian_path(seed: int) -> Iterator[BrownianPath]:
    """Inside this block, :func:`step_noise` takes its draws from one :class:`BrownianPath` (``sandbox
    tune-steps`` compares a stochastic sampler's grids on it); outside, from the sampler's generator."""
    token = _PATH.set(BrownianPath(seed))
    try:
        yield _PATH.get()  # type: ignore[misc]
    finally:
        _PATH.reset(token)


def step_noise(
    x: torch.Tensor, generator: Optional[torch.Generator], schedule: Schedule, t: float, s: float
) -> torch.Tensor:
    """The standard normal noise a sampler adds on its step from time ``t`` to ``s``, shaped like ``x``.

    Fresh draws from ``generator``, or, inside :func:`brownian_path`, the step's increment of that path.
    A stochastic sampler that draws its noise here can be tuned by ``sandbox tune-steps``; one that draws
    from ``generator`` itself is refused, since its output is then no function of the grid.
    """
    path = _PATH.get()
    return randn_like(x, generator) if path is None else path.step(x, schedule, t, s)


class CountingDenoise:
    """A denoise function that counts the network evaluations (NFE) a sampler actually makes."""

    def __init__(self, denoise: Denoise):
        self.denoise = denoise
        self.nfe = 0

    def __call__(self, x: torch.Tensor, t: Union[float, torch.Tensor]) -> torch.Tensor:
        self.nfe += 1
        return self.denoise(x, t)


# ------------------------------------------------------------------------------------------------ NFE budgets


def nfe_for_steps(
    component: Component,
    schedule: Schedule,
    steps: Optional[int],
    denoise: Denoise,
    shape: tuple[int, ...],
    grid: Any = None,
    *,
    params: Any = None,
    registry: Optional[Registry] = None,
    device: Union[str, torch.device, None] = None,
) -> int:
    """Denoise calls per sample of the sampler ``component`` builds: its own ``nfe(schedule)``, else those of
    one counted run on a single item of ``shape`` (zeros on ``device``, the CPU by default).

    ``params``: the sampler's (its defaults if None), with ``steps`` and ``grid`` where they are not None;
    ``registry``: the one its grid is resolved in (the one in use if None).
    """
    params = params if params is not None else component.default_params()
    values = {key: value for key, value in (("steps", steps), ("grid", grid)) if value is not None}
    if values:
        params = dataclasses.replace(params, **values)
    with use_registry(registry) if registry is not None else contextlib.nullcontext(), torch.no_grad():
        sampler = component.build(params)
        if hasattr(sampler, "nfe"):
            return int(sampler.nfe(schedule))
        counter = CountingDenoise(denoise)
        generator = torch.Generator(device or "cpu").manual_seed(0)
        sampler(counter, torch.zeros(1, *shape, device=device), schedule, generator=generator)
    return counter.nfe


def steps_for_budget(
    component: Component,
    schedule: Schedule,
    budget: int,
    denoise: Denoise,
    shape: tuple[int, ...],
    grid: Any = None,
    *,
    params: Any = None,
    registry: Optional[Registry] = None,
    device: Union[str, torch.device, None] = None,
) -> int:
    """The ``steps`` whose NFE (:func:`nfe_for_steps`, same arguments) is closest to ``budget`` (ties: the
    smaller NFE): NFE per step read off at ``budget`` steps, then the step counts around that guess."""
    cache: dict[int, int] = {}

    def nfe(steps: int) -> int:
        if steps not in cache:
            cache[steps] = nfe_for_steps(
                component, schedule, steps, denoise, shape, grid, params=params, registry=registry, device=device
            )
        return cache[steps]

    guess = max(1, round(budget / max(nfe(budget) / budget, 1e-9)))
    return min({max(1, guess + d) for d in (-2, -1, 0, 1, 2)}, key=lambda s: (abs(nfe(s) - budget), nfe(s), s))
