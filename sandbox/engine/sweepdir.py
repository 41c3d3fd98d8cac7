"""A sweep's folder as ``sandbox sweep`` and ``sandbox summary`` both read it: cell states, launcher jobs, axis values.

The sweep tool (:mod:`sandbox.tools.sweep`) writes a sweep's plan and state
into ``sweep.json``, one run folder per cell, and each launcher submission
into ``jobs.json`` (:class:`sandbox.engine.rundir.SweepDir` names them). Two
tools read them: the sweep (``--status``, and before it submits or runs a
cell) and the summary (what a live sweep's unfinished cells are doing). What
both need lives here, below them: the state of a run folder, a cell's or one
run's that ``sandbox run --launcher`` submitted (:func:`folder_state`), and of
each cell (:func:`sweep_status`), the record of the launchers' jobs and their states
(:func:`read_jobs`, :func:`job_states`), and how an axis value is spelled on
the command line (:func:`split_list`, :func:`parse_value`), which ``--axis``
and ``--baseline`` share so that a baseline matches the values a sweep recorded.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sandbox.engine.rundir import RunDir, SweepDir, read_json, write_json
from sandbox.engine.runlock import lock_holder, pid_alive
from sandbox.errors import SandboxError
from sandbox.registry import Registry

if TYPE_CHECKING:
    from sandbox.protocols import JobState, Launcher

# fmt: off
#: a cell's states in ``sandbox sweep --status``, in the order its title counts them
STATES = ("done", "running", "queued", "failed", "interrupted", "to run", "unknown", "invalid")
UNFINISHED = ("running", "queued", "interrupted", "to run", "unknown")   # neither a result nor a failure yet
# fmt: on


# --- axis values --------------------------------------------------------------------------------------------


def split_list(text: str) -> list[str]:
    """Split on the commas outside brackets, braces and quotes: ``[1,2],{a: 1, b: 2},x``."""
    parts, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced '{char}'")
        elif char == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    if depth or quote:
        raise ValueError("unbalanced brackets or quotes")
    parts.append(text[start:].strip())
    return parts


def parse_value(text: str) -> Any:
    """A value as a dot-list override reads it: ints, floats, bools, null, lists, mappings, else a string."""
    try:
        parsed = OmegaConf.to_container(OmegaConf.from_dotlist([f"v={text}"]))
    except OmegaConfBaseException as exc:
        raise ValueError(str(exc).splitlines()[0]) from exc
    assert isinstance(parsed, dict)
    return parsed["v"]


# --- the launchers' jobs: jobs.json -------------------------------------------------------------------------


def read_jobs(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Every submission recorded in the sweep folder's ``jobs.json``, oldest first."""
    data = read_json(SweepDir(sweep_dir).jobs)
    return list(data.get("jobs", [])) if isinstance(data, dict) else []


def add_jobs(sweep_dir: str | Path, records: list[dict[str, Any]]) -> None:
    """Append submissions (:func:`record`) to ``jobs.json``; only the submitting sweep calls it, under its lock."""
    write_json(SweepDir(sweep_dir).jobs, {"jobs": read_jobs(sweep_dir) + records})


def record(launcher: str, params: dict[str, Any], job: dict[str, Any], cells: list[str]) -> dict[str, Any]:
    """One submission as ``jobs.json`` keeps it: the launcher, its parameters, the cells, and the job's own record
    (what :meth:`sandbox.protocols.Launcher.submit` returned for it)."""
    return {
        "launcher": launcher,
        "params": params,
        "cells": cells,
        "submitted": time.strftime("%Y-%m-%d %H:%M:%S"),
        **job,
    }


def latest_by_cell(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The newest submission of each cell id."""
    out: dict[str, dict[str, Any]] = {}
    for submission in records:
        for cell_id in submission.get("cells", []):
            out[cell_id] = submission
    return out


def rebuild_launcher(job: dict[str, Any], registry: Registry | None = None) -> Launcher:
    """The launcher that submitted ``job``, built again from the name and parameters it recorded."""
    from sandbox.recipe import _component
    from sandbox.registry import get_registry

    registry = registry if registry is not None else get_registry()
    section = {"name": job.get("launcher"), **(job.get("params") or {})}
    try:
        name, params = _component(registry, "launcher", section)
    except SandboxError as exc:
        raise SandboxError(f"cannot ask launcher {job.get('launcher')!r} for its jobs: {exc}") from exc
    launcher: Launcher = registry.get("launcher", name).build(params)
    return launcher


def job_states(sweep_dir: str | Path, registry: Registry | None = None) -> dict[str, tuple[dict[str, Any], JobState]]:
    """Each submitted cell's newest job record in ``jobs.json`` and that job's state, asked of the launcher that
    submitted it (a launcher that cannot answer makes its jobs' states ``unknown``)."""
    from sandbox.protocols import JobState  # imports torch

    latest = latest_by_cell(read_jobs(sweep_dir))
    records = list({id(r): r for r in latest.values()}.values())
    states: dict[int, JobState] = {}
    by_launcher: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_launcher.setdefault(json.dumps([r.get("launcher"), r.get("params")], sort_keys=True), []).append(r)
    for group in by_launcher.values():
        try:
            answers = rebuild_launcher(group[0], registry).states(group)
        except SandboxError as exc:
            answers = [JobState("unknown", str(exc))] * len(group)
        states.update({id(r): state for r, state in zip(group, answers, strict=True)})
    return {cell_id: (r, states[id(r)]) for cell_id, r in latest.items()}


def live_jobs(sweep_dir: str | Path, registry: Registry | None = None) -> dict[str, tuple[dict[str, Any], JobState]]:
    """The cells whose newest job is queued or running, or whose state is unknown: never submitted or run again
    meanwhile."""
    if not SweepDir(sweep_dir).jobs.exists():
        return {}
    return {k: v for k, v in job_states(sweep_dir, registry).items() if v[1].phase != "ended"}


# --- the cells' states ----------------------------------------------------------------------------------------


@dataclass
class CellStatus:
    """A cell's state for ``sandbox sweep --status``: one of :data:`STATES`, with the job that runs it, what went
    wrong or how far it got, and its job's log."""

    # fmt: off
    id: str
    group: dict[str, str]
    seed: int
    state: str
    job: str | None = None              # the job id of its newest submission
    detail: str = ""                    # the error of a failed cell, the step of a running or interrupted one
    log: str | None = None              # its job's stderr log
    # fmt: on


def _step_of(run: RunDir) -> tuple[str | None, Any]:
    """A run folder's ``status.json`` status and step (the step it started or stopped at)."""
    status = read_json(run.status) if run.status.exists() else None
    return (status.get("status"), status.get("step")) if isinstance(status, dict) else (None, None)


def _checkpointed(run: RunDir) -> int | None:
    """The step of a run folder's newest step checkpoint, from the file names (without importing torch)."""
    steps = [int(m.group(1)) for p in run.checkpoints.glob("step_*.pt") if (m := re.match(r"step_(\d+)\.pt$", p.name))]
    return max(steps) if steps else None


def folder_state(
    run_dir: str | Path,
    job: tuple[dict[str, Any], JobState] | None = None,
    *,
    resume: str,
    sweep_pid: int | None = None,
) -> tuple[str, str]:
    """A run folder's state and its detail, as ``sandbox sweep --status`` shows a cell's and ``sandbox run
    --status`` a run's: the first of these that holds.

    - ``done``: its ``summary.json`` is readable;
    - ``queued`` or ``running``: its newest job (``job``: the record and the launcher's state) is queued or
      running, and running once the run has begun in the folder;
    - ``unknown``: the launcher cannot tell;
    - ``running``: a process holds the folder's lock (:func:`~sandbox.engine.runlock.lock_holder`);
    - ``failed``: its ``error.json``;
    - ``running``: ``sweep_pid``, the live local sweep that runs it, is given;
    - ``interrupted``: ``status.json`` says training while nothing holds the lock (the process died), or says
      interrupted (stopped after a checkpoint); ``resume`` says how it resumes;
    - ``failed``: its job ended without a result;
    - else ``to run``.
    """
    run = RunDir(run_dir)
    record, state = job if job is not None else (None, None)
    name = f"job {record.get('job_id')}" if record is not None else ""
    status, step = _step_of(run)
    saved = _checkpointed(run)
    error = read_json(run.error) if run.error.exists() else None
    if isinstance(read_json(run.summary), dict):
        return "done", ""
    if state is not None and state.phase in ("queued", "running"):
        detail = state.raw if saved is None else f"{state.raw}, checkpoint at step {saved}"
        return ("running" if state.phase == "running" and run.is_run() else "queued"), detail
    if state is not None and state.phase == "unknown":
        return "unknown", f"{name}: {state.raw}; not submitted again meanwhile"
    if (holder := lock_holder(run.path)) is not None:
        return "running", f"step {step} (PID {holder.get('pid')} on {holder.get('host')})"
    if isinstance(error, dict):
        return "failed", str(error.get("message", f"{run.ERROR} is unreadable"))
    if sweep_pid is not None:
        return "running", f"step {step} (sandbox sweep PID {sweep_pid})"
    where = f"checkpoint at step {saved}" if saved is not None else "no checkpoint"
    if status == "training":  # its lock is free: the process that trained it is gone
        return "interrupted", f"died at or after step {step} ({where}); {resume}"
    if status == "interrupted":
        return "interrupted", f"stopped at step {step} ({where}); {resume}"
    if state is not None:
        after = f" after step {step}" if step is not None else ""
        return "failed", f"{name} ended ({state.raw}) without a result{after}"
    return "to run", ""


def sweep_status(sweep_dir: str | Path, registry: Registry | None = None) -> list[CellStatus]:
    """Each cell of the sweep in ``sweep_dir`` (its ``sweep.json``), from its folder and its newest job's state
    (:func:`folder_state`)."""
    sweep = SweepDir(sweep_dir)
    plan = read_json(sweep.plan)
    if not isinstance(plan, dict) or not isinstance(plan.get("cells"), list):
        raise SandboxError(f"{sweep.path} holds no readable {sweep.PLAN}; expected the folder of a sandbox sweep")
    jobs = job_states(sweep.path, registry) if sweep.jobs.exists() else {}
    local = plan.get("state") == "running" and isinstance(plan.get("pid"), int) and pid_alive(plan["pid"])
    rows: list[CellStatus] = []
    seen: set[str] = set()
    for entry in plan["cells"]:
        if entry["id"] in seen:
            continue  # a duplicate cell shares its twin's folder
        seen.add(entry["id"])
        row = CellStatus(entry["id"], dict(entry.get("group", {})), int(entry.get("seed", 0)), "to run")
        job = jobs.get(entry["id"])
        if job is not None:
            row.job, row.log = str(job[0].get("job_id")), job[0].get("stderr")
        if entry.get("status") == "invalid":
            row.state, row.detail = "invalid", entry.get("error") or ""
        else:
            row.state, row.detail = folder_state(
                sweep.cell(entry["id"]),
                job,
                resume="sandbox sweep resumes it",
                sweep_pid=plan["pid"] if local and entry.get("status") == "running" else None,
            )
        rows.append(row)
    return rows
