"""The ``submitit`` launcher: a sweep's jobs as one SLURM job array (or local processes) through submitit.

Each job runs :class:`CellJob`, a ``submitit.helpers.Checkpointable`` that
calls the job function the sweep handed to :meth:`SubmititLauncher.submit`
(``run_job``, :data:`sandbox.protocols.RunJob`) on the job's cell tasks. Near
the time limit SLURM sends USR2 (``signal_delay_s`` before it; clusters that
signal preemption send it then too): the job's handler asks the trainer to
stop, which finishes its step, writes a checkpoint and stops, and then hands
the signal to submitit, whose handler calls :meth:`CellJob.checkpoint` and
requeues the job; the requeued job resumes each unfinished cell from its
latest checkpoint. SIGTERM (``scancel``, preemption without the signal)
stops a cell the same way without a requeue; ``sandbox sweep`` run again
submits it to resume.

Job states come from submitit (``sacct``), with ``squeue`` asked when
accounting does not know a job yet; for ``executor: local`` a job is running
while its controller process lives.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

try:
    import submitit
except ImportError as exc:  # the cluster extra is optional
    from sandbox.errors import SandboxError

    raise SandboxError(
        "launcher 'submitit' needs the submitit package: pip install 'diffusion-sandbox[cluster]'"
    ) from exc

from sandbox_plugins.launchers.params import SubmititParams

from sandbox.errors import SandboxError
from sandbox.protocols import JobState, RunJob

# fmt: off
QUEUED = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED"}
RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}
# fmt: on


def slurm_phase(state: str) -> str:
    """A SLURM job state (``sacct``/``squeue`` spelling, ``CANCELLED by 123`` included) as a phase."""
    word = state.split()[0].upper() if state.strip() else "UNKNOWN"
    if word in QUEUED:
        return "queued"
    if word in RUNNING:
        return "running"
    return "unknown" if word == "UNKNOWN" else "ended"


class CellJob(submitit.helpers.Checkpointable):
    """One job: a cell that trains, then the cells that sample from its training, each resumed if unfinished.

    ``run_job`` runs the tasks; submitit pickles it (by reference) with the
    job. ``checkpoint()`` (inherited) resubmits the same tasks: the cells carry
    their state in their folders, so a requeue resumes them from their checkpoints.
    """

    def __init__(self, run_job: RunJob):
        self.run_job = run_job

    def __call__(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        usr = submitit.JobEnvironment._usr_sig()
        requeue = signal.getsignal(usr)  # submitit's: checkpoint() and requeue
        caught: list[int] = []

        def stop(signum: int, frame: Any) -> None:
            caught.append(signum)
            os.kill(os.getpid(), signal.SIGTERM)  # the trainer's stop: finish the step, checkpoint, stop

        signal.signal(usr, stop)
        results = self.run_job(tasks, lambda: bool(caught))
        if caught and callable(requeue):
            requeue(caught[0], None)  # requeues and exits; returns only where the job is not requeued
        return results


class SubmititLauncher:
    """Submits with ``submitit.AutoExecutor`` (one array on SLURM); see :class:`sandbox.protocols.Launcher`."""

    def __init__(self, params: SubmititParams):
        self.params = params

    def executor(self, folder: Path, name: str) -> Any:
        p = self.params
        try:
            executor = submitit.AutoExecutor(
                folder=str(folder / "%j"),
                cluster=p.executor,
                slurm_max_num_timeout=p.max_requeues,
                local_max_num_timeout=p.max_requeues,
            )
        except RuntimeError as exc:  # no srun on this machine
            raise SandboxError(
                f"recipe key 'launcher.executor': {p.executor!r}: {exc} Submit from a SLURM login node, or run the "
                "jobs here with launcher.executor=local"
            ) from exc
        options: dict[str, Any] = {
            "name": name,
            "timeout_min": p.timeout_min,
            "nodes": 1,
            "tasks_per_node": 1,
            "cpus_per_task": p.cpus_per_task,
            "gpus_per_node": p.gpus_per_task,
            "mem_gb": p.mem_gb,
            "slurm_array_parallelism": p.array_parallelism,
            "slurm_signal_delay_s": p.signal_delay_s,
        }
        if p.partition:
            options["slurm_partition"] = p.partition
        if p.sbatch:
            options["slurm_additional_parameters"] = dict(p.sbatch)
        if p.setup:
            options[f"{p.executor}_setup"] = list(p.setup)
        executor.update_parameters(**options)
        return executor

    def submit(
        self, run_job: RunJob, jobs: list[list[dict[str, Any]]], folder: Path, name: str
    ) -> list[dict[str, Any]]:
        executor = self.executor(folder, name)
        with executor.batch():
            submitted = [executor.submit(CellJob(run_job), tasks) for tasks in jobs]
        return [
            {
                "job_id": str(job.job_id),
                "executor": self.params.executor,
                "host": socket.gethostname(),
                "folder": str(job.paths.folder),
                "stdout": str(job.paths.stdout),
                "stderr": str(job.paths.stderr),
            }
            for job in submitted
        ]

    def states(self, records: list[dict[str, Any]]) -> list[JobState]:
        return [self._state(r) for r in records]

    def _state(self, record: dict[str, Any]) -> JobState:
        if record.get("executor") == "local":
            if record.get("host") != socket.gethostname():
                return JobState("unknown", f"a local job on {record.get('host')}")
            return (
                JobState("running", "RUNNING") if _controller_alive(record["job_id"]) else JobState("ended", "ENDED")
            )
        raw = str(submitit.SlurmJob(folder=record["folder"], job_id=record["job_id"]).state)
        if slurm_phase(raw) == "unknown":  # not in accounting (yet): the queue knows pending and running jobs
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                out = subprocess.run(
                    ["squeue", "-h", "-r", "-j", record["job_id"], "-o", "%T"],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                )
                raw = out.stdout.strip().splitlines()[0] if out.stdout.strip() else "ENDED"
        return JobState(slurm_phase(raw), raw)


def _controller_alive(job_id: str) -> bool:
    """Whether submitit's local controller process ``job_id`` (its PID) still runs."""
    try:
        cmdline = Path(f"/proc/{int(job_id)}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False
    return b"submitit" in cmdline  # a zombie's (ended, not yet reaped) is empty


def build(params: SubmititParams | None) -> SubmititLauncher:
    return SubmititLauncher(params if params is not None else SubmititParams())
