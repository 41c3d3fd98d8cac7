"""The contract around a run: exporters of its weights, the run events loggers receive, launchers of its jobs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from sandbox.protocols.registration import Build


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
