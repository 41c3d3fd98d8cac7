"""The sampling contract: guidance, samplers and the time grids they step on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional, Protocol, TypedDict, Union, runtime_checkable

import torch

from sandbox.protocols.denoiser import Denoise
from sandbox.protocols.schedule import Schedule


class Conditioned(Protocol):
    """What a :class:`Guidance` steers: the denoise functions of one batch, each for the batch's classes.

    Every method takes ``(x_t, t)`` as :class:`Denoise` does and returns estimates of ``x_0``. The engine
    counts what each costs: one network evaluation per item per model call (``both`` is two), and one
    forward pass per network call (``both`` is one, the two halves of one batch, where the model allows it).
    """

    def conditional(self, x_t: torch.Tensor, t: Union[float, torch.Tensor], /) -> torch.Tensor:
        """``D(x_t, t | c)``: the model, for each item's class (the model itself for an unconditional run)."""
        ...

    def unconditional(self, x_t: torch.Tensor, t: Union[float, torch.Tensor], /) -> torch.Tensor:
        """``D(x_t, t | null)``: the same model with the null class (a conditional run only)."""
        ...

    def both(self, x_t: torch.Tensor, t: Union[float, torch.Tensor], /) -> tuple[torch.Tensor, torch.Tensor]:
        """``(conditional, unconditional)`` in one batched forward pass."""
        ...

    def guide(self, x_t: torch.Tensor, t: Union[float, torch.Tensor], /) -> torch.Tensor:
        """The guiding model's ``D_0(x_t, t | c)`` (autoguidance): the run or checkpoint that the guidance's
        ``guide`` parameter names; a :class:`sandbox.errors.SandboxError` when it names none."""
        ...

    def noise_level(self, t: Union[float, torch.Tensor], /) -> torch.Tensor:
        """``sigma~ = sigma(t) / alpha(t)`` per item, float64 (EDM's sigma, the same for every schedule)."""
        ...


@runtime_checkable
class Guidance(Protocol):
    """``guidance(model, x_t, t) -> x_0`` estimate: how the recipe's ``guidance:`` section steers sampling.

    The engine wraps it into the :class:`Denoise` a sampler calls, so every
    sampler, grid and schedule works with every guidance unchanged. ``model``
    is a :class:`Conditioned` of the batch; the guidance chooses which of its
    estimates to combine and how (classifier-free guidance: ``D_u + w (D_c - D_u)``,
    Ho & Salimans 2022). ``conditional`` is ``True`` when it needs a
    class-conditional model (one trained with ``train.conditional``). A guidance whose
    params have a ``guide`` field gets the model that field names as ``model.guide``
    (:meth:`Conditioned.guide`).
    """

    conditional: bool

    def __call__(self, model: Conditioned, x_t: torch.Tensor, t: Union[float, torch.Tensor], /) -> torch.Tensor: ...


class StepInfo(TypedDict):
    """The one dict a sampler passes to ``callback`` per step (after k-diffusion's samplers)."""

    # fmt: off
    x: torch.Tensor          #: the current state x_t, before the step
    i: int                   #: step index, 0, 1, 2, ...
    t: float                 #: the time of x
    denoised: torch.Tensor   #: the denoise function's estimate of x_0 at (x, t)
    # fmt: on


Callback = Callable[[StepInfo], None]


@runtime_checkable
class Sampler(Protocol):
    """``sampler(denoise, noise, schedule, *, generator=None, callback=None) -> x_0`` and ``nfe(schedule)``.

    ``noise`` is standard Gaussian noise of the output shape (unit variance,
    not x_T): the sampler scales it to the marginal at its first time with
    :func:`sandbox.sampling.prior`, and must not change it in place.
    Every random draw uses ``generator`` (``torch.randn(..., generator=generator)``),
    so one seed gives one result whatever the global RNG. ``callback``, when
    given, gets one :class:`StepInfo` per step. The result has ``noise``'s
    shape. Both methods are required: ``nfe(schedule)`` is the exact number
    of ``denoise`` calls one ``__call__`` makes on that schedule.
    """

    def __call__(
        self,
        denoise: Denoise,
        noise: torch.Tensor,
        schedule: Schedule,
        /,
        *,
        generator: Optional[torch.Generator] = None,
        callback: Optional[Callback] = None,
    ) -> torch.Tensor: ...

    def nfe(self, schedule: Schedule) -> int: ...


@runtime_checkable
class Grid(Protocol):
    """``grid(schedule, steps) -> times``: where a sampler evaluates the network, separate from the solver.

    Returns at most ``steps + 1`` strictly descending float64 times in
    [0, 1] (a 1-D tensor) whose last is exactly 0; sampling starts at the
    first, which is 1 unless the grid means otherwise (diffusers' ``leading``
    spacing). A sampler whose parameters have ``grid`` (a registered grid's
    name, or an explicit list of times) and ``steps`` steps on
    ``grid(schedule, steps)`` (:func:`sandbox.grids.sampler_grid`), so every
    grid goes with every such sampler, and its ``nfe`` counts the times the
    grid really returned. A grid's ``build(params)`` gets its params
    dataclass filled from the sampler's parameters of the same name
    (``sampler.rho`` for ``karras``).
    """

    def __call__(self, schedule: Schedule, steps: int, /) -> torch.Tensor: ...
