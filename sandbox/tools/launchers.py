"""Launchers: how ``sandbox sweep --launcher NAME`` runs a sweep's cells somewhere else than this process.

``--launcher local``, the default, is the engine's own runner
(:func:`sandbox.tools.sweep.run_sweep`: one process per cell on this machine,
waited for). Any other name is a registered component of kind ``launcher``
(hook ``register_launchers``); ``build(params)`` returns a :class:`Launcher`,
and the recipe's optional ``launcher: {name: ..., <params>}`` section gives
its parameters. The sandbox ships ``submitit`` (a SLURM job array through
submitit; ``executor: local`` runs the same jobs as local processes).

A launcher submits *jobs*: each is a list of cell tasks that
:func:`sandbox.tools.sweep.run_job` runs in order in the job (a cell that trains,
then the cells that only sample from its training). The sweep records every
submission in ``<sweep>/jobs.json`` (:data:`JOBS_FILE`), written only by the
submitting ``sandbox sweep`` under the folder's lock, and asks the launcher
for the state of the recorded jobs before submitting anything, so a cell
whose job is queued or running is never submitted again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sandbox.engine.rundir import read_json, write_json

# fmt: off
JOBS_FILE = "jobs.json"
LOCAL = "local"                                 # the engine's own runner; not a registered launcher
PHASES = ("queued", "running", "ended", "unknown")
# fmt: on


@dataclass(frozen=True)
class JobState:
    """A job's state as its scheduler tells it: a phase of :data:`PHASES` and the scheduler's own word."""

    phase: str  # queued, running, ended (finished, failed, cancelled, timed out: the cell's folder tells which)
    raw: str = ""  # PENDING, RUNNING, FAILED, TIMEOUT, ... as the scheduler names it

    @property
    def live(self) -> bool:
        """Queued or running: its cells are not submitted again."""
        return self.phase in ("queued", "running")


class Launcher(Protocol):
    """What a launcher's ``build(params)`` returns."""

    def submit(self, jobs: list[list[dict[str, Any]]], folder: Path, name: str) -> list[dict[str, Any]]:
        """Submit each job (a list of cell tasks, run by ``sandbox.tools.sweep.run_job``) under the job name ``name``,
        keeping scheduler files under ``folder``; return one JSON-serialisable record per job, in order, with at
        least ``job_id`` and the paths of its logs, ``stdout`` and ``stderr``."""
        ...

    def states(self, records: list[dict[str, Any]]) -> list[JobState]:
        """The state of each job that :meth:`submit` recorded, in order."""
        ...


def read_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every submission recorded in the sweep folder, oldest first."""
    data = read_json(Path(sweep_dir) / JOBS_FILE)
    return list(data.get("jobs", [])) if isinstance(data, dict) else []


def add_jobs(sweep_dir: Path, records: list[dict[str, Any]]) -> None:
    """Append submissions to :data:`JOBS_FILE` (call under the sweep's lock)."""
    write_json(Path(sweep_dir) / JOBS_FILE, {"jobs": read_jobs(sweep_dir) + records})


def latest_by_cell(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The newest submission of each cell id."""
    out: dict[str, dict[str, Any]] = {}
    for record in records:
        for cell_id in record.get("cells", []):
            out[cell_id] = record
    return out


def record(launcher: str, params: dict[str, Any], job: dict[str, Any], cells: list[str]) -> dict[str, Any]:
    """One submission as :data:`JOBS_FILE` keeps it: the launcher, its parameters, the job and its cells."""
    return {
        "launcher": launcher,
        "params": params,
        "cells": cells,
        "submitted": time.strftime("%Y-%m-%d %H:%M:%S"),
        **job,
    }
