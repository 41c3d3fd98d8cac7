"""The plugin contract, stated once: every type a plugin implements or receives.

A plugin implements the hooks of :mod:`sandbox.hookspecs`; each hook is
handed a :class:`Register` callable and records components with it. The
``build`` of each kind is called one way:

===========  =======================  ==============================================================
kind         ``build`` call           returns
===========  =======================  ==============================================================
dataset      ``build(params)``        :class:`DataSplits`
schedule     ``build(params)``        a :class:`Schedule`
denoiser     ``build(params, shape)``  a :class:`DenoiserNetwork` (trained), or an
                                      :class:`AnalyticDenoiser` (exact, nothing to train); a class-conditional
                                      run calls ``build(params, shape, num_classes=K)``
sampler      ``build(params)``        a :class:`Sampler`
grid         ``build(params)``        a :class:`Grid` (not a recipe section: ``sampler.grid`` names one)
guidance     ``build(params)``        a :class:`Guidance` (the recipe's optional ``guidance:`` section)
logger       ``build(params)``        an object whose ``@hookimpl`` methods implement run-event hooks,
                                      each given a :class:`RunInfo` (``run.loggers`` enables it)
launcher     ``build(params)``        a :class:`Launcher` (``sandbox sweep --launcher NAME``)
===========  =======================  ==============================================================

``params`` is an instance of the dataclass given at registration (``None``
when the component registered none). A params dataclass checks its own
ranges in ``__post_init__`` and raises :class:`sandbox.errors.ParameterError`
with the field's name; the engine adds the recipe section, so ``sandbox show``
and ``sandbox sweep --dry-run`` reject a bad value before anything is built.

Three things take part in denoising, with three names:

* the **denoiser network** ``F`` (:class:`DenoiserNetwork`), the trainable
  module a recipe's ``denoiser:`` section chooses, sees only
  ``F(c_in x_t, c_noise)``;
* the **preconditioned denoiser** ``D`` (:class:`sandbox.engine.precond.Preconditioned`)
  wraps it with a prediction target's scalings,
  ``D(x_t, t) = c_skip x_t + c_out F(c_in x_t, c_noise)`` (Karras et al. 2022, eq. 7);
* the **denoise function** (:class:`Denoise`) is what a sampler calls:
  ``denoise(x_t, t)`` returns the estimate of ``x_0``.

This module imports torch; ``import sandbox`` does not (the names are
re-exported from :mod:`sandbox` lazily).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Protocol, TypedDict, Union, runtime_checkable

import torch

#: what ``build`` may be given as: the callable itself, or a lazy ``"module:attr"`` path
Build = Union[Callable[..., Any], str]


class Register(Protocol):
    """The callable each ``register_*`` hook receives: ``register(name, build, *, params=None, description=None)``.

    ``name`` is lower-case letters, digits, ``_`` or ``-``, starting with a
    letter, and must be unique within its kind. ``build`` is a callable or a
    ``"module:attr"`` string imported only when the component is used (so
    ``sandbox list`` stays fast and torch-free). ``params`` is a dataclass
    type of the component's typed parameters, against which recipe values
    are validated; its docstring's first line is the default ``description``.
    """

    def __call__(
        self, name: str, build: Build, *, params: Optional[type] = None, description: Optional[str] = None
    ) -> None: ...


# ------------------------------------------------------------------------------------------------ datasets

#: ``exact_x0(x_t, alpha, sigma) -> E[x_0 | x_t]`` for ``x_t = alpha x_0 + sigma eps``;
#: ``alpha`` and ``sigma`` broadcast against ``x_t`` (one value per item). A dataset that declares classes
#: also answers ``exact_x0(x_t, alpha, sigma, labels)``: ``E[x_0 | x_t, c]`` per item, where a label equal to
#: the number of classes (the null class, :func:`null_label`) asks for the unconditional ``E[x_0 | x_t]``.
ExactX0 = Callable[..., torch.Tensor]


@dataclass
class DataSplits:
    """What a dataset's ``build(params)`` returns.

    ``train`` and ``val`` are ``torch.utils.data.Dataset`` objects whose items
    are float tensors of ``shape`` (or tuples whose first element is one),
    scaled so the data has roughly unit scale: images in [-1, 1].

    A dataset with labels names its ``classes``; its items are then
    ``(x, label)`` pairs, ``label`` an integer in ``[0, len(classes))``
    (torchvision's convention), which a class-conditional run
    (``train.conditional``) trains on. Runs that are not conditional read
    ``x`` alone, so declaring classes changes nothing for them.
    """

    # fmt: off
    train: Any                                   #: training split (a torch Dataset)
    val: Any                                     #: held-out split: validation loss and real-data scores
    shape: tuple[int, ...]                       #: shape of one item, e.g. (3, 32, 32) or (2,)
    render: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    # fmt: on
    """``render(samples) -> Tensor[3, H, W]`` in [0, 1]: one picture of a batch; images get a grid by default."""
    evaluate: Optional[Callable[[torch.Tensor], dict[str, float]]] = None
    """``evaluate(samples) -> {metric: value}``; the engine scores generated samples and as many held-out
    real items, so every quality figure is reported next to the real data's."""
    description: str = ""  #: one line shown in the run's header
    exact_x0: Optional[ExactX0] = None
    """The data's exact denoiser in closed form, where one is known (read by analytic denoisers)."""
    cache_dir: Optional[str] = None
    """A folder beside the data where the engine may cache statistics derived from the training split (the
    reference statistics of ``eval.metrics``, :mod:`sandbox.engine.fid`); None: beside the run folder instead."""
    classes: Optional[list[str]] = None
    """The names of the classes, when items carry a label (their index in this list); None: unlabelled."""
    evaluate_classes: Optional[Callable[[torch.Tensor, torch.Tensor], dict[str, float]]] = None
    """``evaluate_classes(samples, labels) -> {metric: value}``: how well samples drawn for the classes
    ``labels`` (``int64 [N]``) show them, such as the share a classifier assigns to the requested class; the
    engine reports it for held-out real items with their own labels too."""
    to_data: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    """``to_data(x) -> x`` in the data's own units: the inverse of the dataset's normalisation, for a dataset that
    rescales its items (per-feature standardisation, say). The engine applies it to samples before it saves them
    (``samples/final.pt``, ``sandbox sample``'s ``samples.pt``); everything else (``render``, ``evaluate``,
    ``evaluate_classes``, FID) is given samples as the model draws them, like the items of ``train`` and ``val``,
    so an ``evaluate`` that scores in data units applies ``to_data`` itself. None: the items are in data units."""
    levels: Optional[int] = None
    """Discrete data: each coordinate of an item takes one of ``levels`` evenly spaced values from -1 to 1 (256 for
    8-bit images scaled to [-1, 1]), so its likelihood is a probability, reported in bits per dimension
    (:mod:`sandbox.engine.likelihood`). None: continuous data, whose likelihood is a density (nats per dimension)."""
    log_density: Optional[Callable[[torch.Tensor, float], torch.Tensor]] = None
    """``log_density(x, noise) -> [N]``: the exact ``log p(x)`` of the data smoothed by ``N(0, noise^2 I)``, in
    nats per item, where it is known in closed form (an exact mixture); the likelihood reports it beside its
    estimates."""


def null_label(classes: int) -> int:
    """The null class of a model trained on ``classes`` classes: the label meaning "no condition"
    (classifier-free guidance's dropped label, Ho & Salimans 2022), one past the last class."""
    return classes


def item_label(item: Any) -> torch.Tensor:
    """The label of a labelled split's item (or the labels of a batch of them), as ``int64``."""
    return torch.as_tensor(item[1], dtype=torch.int64)


def first_tensor(item: Any) -> torch.Tensor:
    """The data of a split's item (or of a batch of them): the item itself, or its first element."""
    data: torch.Tensor = item[0] if isinstance(item, (tuple, list)) else item
    return data


@runtime_checkable
class StoredItems(Protocol):
    """A split stored as one tensor, which the engine may keep on the training device and batch there.

    Optional for a ``DataSplits.train`` split: when it has these two methods
    (and ``run.data_on_device`` allows it), training skips the DataLoader,
    moves :meth:`stored` to the device once and turns each batch of rows into
    training items with :meth:`decode` on the device, so the device never waits
    for the host. ``decode(stored()[[i]], g)`` must give items of the same
    distribution as ``split[i]`` (a ``uint8`` image scaled to [-1, 1], with the
    same random augmentation), drawing any randomness from the CPU generator
    ``g``, which the engine seeds per batch so a resumed run draws the same.
    """

    def stored(self) -> torch.Tensor:
        """The split's items as stored, ``[N, ...]`` in any dtype (``uint8`` images take a quarter of float32)."""
        ...

    def decode(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Rows of :meth:`stored` (on any device) -> float training items on the same device."""
        ...


@runtime_checkable
class StoredLabels(Protocol):
    """A labelled :class:`StoredItems` split: its labels as one tensor, row for row with :meth:`StoredItems.stored`,
    so a class-conditional run can batch it on the device too."""

    def stored_labels(self) -> torch.Tensor:
        """``int64 [N]``: the label of each stored row."""
        ...


# ------------------------------------------------------------------------------------------------ schedules


@runtime_checkable
class Schedule(Protocol):
    """A Gaussian forward process ``x_t = alpha(t) x_0 + sigma(t) eps`` over t in [0, 1].

    Notation of Kingma et al. (2021), "Variational Diffusion Models"; t = 0
    is clean data, t = 1 (nearly) pure noise. Only :meth:`alpha_sigma` is
    required: subclass :class:`Schedule` explicitly to inherit the defaults
    below (the base class :class:`sandbox.schedule.Schedule` is this one).
    Training draws t with :meth:`sample_t`; every sampler steps on
    :meth:`timesteps` and reads ``alpha``, ``sigma`` there, so any schedule
    works with any sampler. A sampler that moves to a noise level off the
    grid (Heun's churn, Karras et al. 2022, Algorithm 2) finds its time with
    :meth:`t_from_log_snr`.
    """

    #: number of points of a discrete schedule's grid (DDPM's T), or None for a continuous one
    num_steps: Optional[int] = None

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Signal and noise scales ``(alpha(t), sigma(t))``, each of ``t``'s shape, dtype and device."""
        ...

    def log_snr(self, t: torch.Tensor) -> torch.Tensor:
        """``lambda(t) = log(alpha^2 / sigma^2)``, non-increasing in t."""
        alpha, sigma = self.alpha_sigma(t)
        return 2.0 * (torch.log(alpha) - torch.log(sigma))

    def t_from_log_snr(self, lambda_: torch.Tensor) -> torch.Tensor:
        """The time ``t`` in [0, 1] with ``log_snr(t) = lambda_`` (float64, ``lambda_``'s shape).

        The default inverts the monotone :meth:`log_snr` by vectorised
        bisection on [0, 1]: 64 halvings, exact to float64 resolution. A
        ``lambda_`` above ``log_snr(0)`` gives 0, one below ``log_snr(1)``
        gives 1; on a flat stretch any time of the stretch may come back.
        """
        lambda_ = torch.as_tensor(lambda_, dtype=torch.float64)
        lo, hi = torch.zeros_like(lambda_), torch.ones_like(lambda_)
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            above = self.log_snr(mid).to(torch.float64) > lambda_  # log_snr decreases: the root is later
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return hi

    def c_noise(self, t: torch.Tensor) -> torch.Tensor:
        """The noise-level input of the network for targets that use the schedule's: ``1000 t`` (DDPM's scale)."""
        return 1000.0 * t

    def timesteps(self, steps: int) -> torch.Tensor:
        """At most ``steps + 1`` strictly descending float64 times from 1 to exactly 0."""
        return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)

    def sample_t(
        self, n: int, generator: Optional[torch.Generator] = None, device: Optional[torch.device] = None
    ) -> torch.Tensor:
        """``n`` training times in (0, 1] (float32 on ``device``), drawn with ``generator``: uniform by default."""
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=generator.device if generator else None)
        return (1.0 - u).to(device=device, dtype=torch.float32)


# ------------------------------------------------------------------------------------------------ denoisers


@runtime_checkable
class DenoiserNetwork(Protocol):
    """The trainable network ``F`` a recipe's ``denoiser:`` section chooses: a ``torch.nn.Module``.

    ``build(params, shape)`` gets the data's item shape. ``forward(x, c_noise)``
    receives ``x = c_in x_t`` of shape ``(B, *shape)`` and ``c_noise`` of shape
    ``(B,)``, both float32 (or the autocast dtype), and returns a tensor of
    ``x``'s shape and dtype. ``c_noise`` is the prediction target's noise
    input (:data:`sandbox.targets.TARGETS`): ``1000 t`` for epsilon, x0 and v
    (so in [0, 1000]), ``ln(sigma / alpha) / 4`` for EDM (about -1.6 to 1.1);
    embed it with sinusoidal features, not as a table index.

    **Class-conditional.** A network that can take a class is built with
    ``build(params, shape, num_classes=K)`` when the recipe asks for one
    (``train.conditional``) and then called as ``forward(x, c_noise, class_labels)``
    with ``class_labels`` ``int64 (B,)`` in ``[0, K]``, where ``K`` is the null class
    (:func:`null_label`: no condition, for classifier-free guidance). The built-ins
    embed the class in a table of ``K + 1`` rows and add it to the noise-level
    embedding, as ADM (Dhariwal & Nichol 2021) and EDM do. A ``build`` without a
    ``num_classes`` argument cannot take a condition: a conditional recipe naming it
    is refused before any work, and its unconditional use is unchanged.
    """

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class AnalyticDenoiser(Protocol):
    """A denoiser with nothing to train: the data's exact ``E[x_0 | x_t]``.

    The engine trains nothing for it and samples with the exact answer; the
    network path (loss, optimizer, preconditioning) never sees it.
    ``bind(data)`` returns the exact denoiser of that data, or raises
    :class:`sandbox.errors.RecipeError` when the data has no closed form.
    """

    def bind(self, data: DataSplits) -> ExactX0: ...


class Denoise(Protocol):
    """What a sampler calls: ``denoise(x_t, t)`` returns the estimate of ``x_0`` (``x_t``'s shape and dtype).

    ``t`` is a Python float (one time for the batch) or a tensor of one time
    per item, in [0, 1]. Samplers receive a counting wrapper: every call is
    one network evaluation (NFE).
    """

    def __call__(self, x_t: torch.Tensor, t: Union[float, torch.Tensor], /) -> torch.Tensor: ...


# ------------------------------------------------------------------------------------------------ guidance


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


# ------------------------------------------------------------------------------------------------ samplers


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


# ------------------------------------------------------------------------------------------------ grids


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


# ------------------------------------------------------------------------------------------------ exporters


class RegisterExporter(Protocol):
    """What ``register_exporters`` receives: ``register(format, denoiser, export)``.

    ``export`` (a callable or a lazy ``"module:attr"``) writes the weights of
    the denoiser named ``denoiser`` *that the same plugin registers* in
    ``format``'s layout, for ``sandbox export RUN_DIR --format FORMAT OUT``
    (:mod:`sandbox.tools.export`). The one format is ``"diffusers"``, whose
    ``export`` is a :class:`DiffusersExport`.
    """

    def __call__(self, format: str, denoiser: str, export: Build) -> None: ...


class DiffusersExport(Protocol):
    """``export(state_dict, params, shape, *, time_shift) -> (config, state_dict)``: the network as a diffusers model.

    Gets the network's ``state_dict`` (EMA weights) and the ``params`` and
    item ``shape`` its ``build`` got; returns the model's ``config.json`` as a
    dict whose ``"_class_name"`` is a diffusers model class that
    ``DDPMPipeline`` calls as ``model(x_t, k).sample`` (``UNet2DModel``), and
    the weights under that class's names. diffusers passes the integer
    timestep ``k`` where the network was trained on ``c_noise = k +
    time_shift`` (the engine checks the target and schedule give that form):
    the model must give the network's output ``F(x_t, k + time_shift)``.
    What the model cannot express raises :class:`sandbox.errors.ParameterError`
    naming the parameter.
    """

    def __call__(
        self, state_dict: dict[str, torch.Tensor], params: Any, shape: tuple[int, ...], /, *, time_shift: float
    ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]: ...


# ------------------------------------------------------------------------------------------------ run events


@dataclass(frozen=True)
class RunInfo:
    """The run, as every run-event hook of :mod:`sandbox.hookspecs` receives it (read-only).

    The hooks are called on the loggers ``run.loggers`` enables, in the main
    process only (rank 0 under torchrun); ``metrics.jsonl`` in ``run_dir``
    stays the record of truth, and a logger's failure never stops the run.
    """

    # fmt: off
    name: str                      # the recipe's name
    run_dir: Path                  # the run folder (a cell's folder in a sweep)
    recipe: Mapping[str, Any]      # the resolved recipe, as recipe.yaml holds it
    start_step: int = 0            # 0, or the step a resumed run continues after
    world_size: int = 1            # processes training together (torchrun)
    # fmt: on


# ------------------------------------------------------------------------------------------------ launchers

#: the phases of a launcher's job, as :class:`JobState` gives them
PHASES = ("queued", "running", "ended", "unknown")

#: ``run_job(tasks, stop) -> results``: what a launcher's job runs (see :meth:`Launcher.submit`)
RunJob = Callable[[list[dict[str, Any]], Callable[[], bool]], list[dict[str, Any]]]


@dataclass(frozen=True)
class JobState:
    """A job's state as its scheduler tells it: a phase of :data:`PHASES` and the scheduler's own word."""

    # fmt: off
    phase: str                     # queued, running, ended (done, failed, cancelled, timed out) or unknown
    raw: str = ""                  # PENDING, RUNNING, FAILED, TIMEOUT, ... as the scheduler names it
    # fmt: on

    @property
    def live(self) -> bool:
        """Queued or running: its cells are not submitted again."""
        return self.phase in ("queued", "running")


class Launcher(Protocol):
    """What a launcher's ``build(params)`` returns: it runs a sweep's cells, or one run, as the jobs of a scheduler.

    ``sandbox run RECIPE --launcher NAME`` submits a single run as a job of one cell, the same way.

    ``sandbox sweep --launcher NAME`` groups the cells still to run into jobs
    (a cell that trains, then the cells that only sample from its training),
    records every submission in the sweep folder's ``jobs.json`` and asks
    :meth:`states` about the jobs recorded there before it submits anything,
    so a cell whose job is queued or running is never submitted twice.
    ``--launcher local``, the default, is the sweep's own runner, not a launcher.
    """

    def submit(
        self, run_job: RunJob, jobs: list[list[dict[str, Any]]], folder: Path, name: str
    ) -> list[dict[str, Any]]:
        """Submit each job under the job name ``name``, keeping the scheduler's files under ``folder``; return one
        JSON-serialisable record per job, in order, with at least ``job_id`` and the paths of its logs, ``stdout``
        and ``stderr``.

        A job is a list of cell tasks (plain, JSON-able dicts). The job calls
        ``run_job(tasks, stop)`` (:func:`sandbox.tools.sweep.run_job`), which
        runs the tasks in order, each resumed from the latest checkpoint in its
        cell's folder, skips a finished one (so a requeued job goes on where it
        stopped), stops at the first cell that is interrupted (SIGINT or SIGTERM
        to the job's process: the cell finishes its step, checkpoints and stops)
        or once ``stop()`` returns true, and returns one result dict per task it
        reached (``status``: done, ran, failed or interrupted). ``run_job`` is a
        module-level function and must be picklable by reference: submitit
        pickles it with each job, and again when it requeues one.
        """
        ...

    def states(self, records: list[dict[str, Any]]) -> list[JobState]:
        """The state of each job that :meth:`submit` recorded, in order."""
        ...
