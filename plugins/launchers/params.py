"""Typed parameters of the built-in launcher (torch-free, submitit-free: recipes validate without either)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from sandbox.errors import ParameterError
from sandbox.params import at_least, one_of, positive

EXECUTORS = ("slurm", "local")


@dataclass
class SubmititParams:
    """Resources of each job of a sweep submitted through submitit: one task on one node per job."""

    # fmt: off
    executor: str = "slurm"             # slurm (one job array), or local: submitit's LocalExecutor, a process each
    partition: Optional[str] = None     # SLURM partition; null: the cluster's default
    gpus_per_task: int = 1              # GPUs per job (a job trains one cell, then samples the cells sharing it)
    cpus_per_task: int = 8              # CPU cores per job
    mem_gb: Optional[float] = None      # memory per job in GB; null: the partition's default
    timeout_min: int = 240              # time limit per job in minutes; a job near it checkpoints and is requeued
    array_parallelism: int = 64         # jobs of the array that run at once
    max_requeues: int = 3               # requeues after reaching the time limit (preemptions do not count)
    signal_delay_s: int = 120           # seconds before the time limit at which SLURM sends USR2
    setup: list[str] = field(default_factory=list)  # shell lines run before each job: module load, source .venv/...
    sbatch: dict[str, Any] = field(default_factory=dict)  # further sbatch options: {account: lab, qos: high}
    # fmt: on

    def __post_init__(self) -> None:
        one_of(self, "executor", EXECUTORS)
        if self.partition is not None and not str(self.partition).strip():
            raise ParameterError("partition", self.partition, "a partition name, or null for the default")
        at_least(self, "gpus_per_task", 0)
        at_least(self, "cpus_per_task", 1)
        if self.mem_gb is not None:
            positive(self, "mem_gb")
        at_least(self, "timeout_min", 1)
        at_least(self, "array_parallelism", 1)
        at_least(self, "max_requeues", 0)
        at_least(self, "signal_delay_s", 0)
        if self.signal_delay_s >= 60 * self.timeout_min:
            raise ParameterError(
                "signal_delay_s, timeout_min",
                (self.signal_delay_s, self.timeout_min),
                "signal_delay_s shorter than the time limit (timeout_min minutes)",
            )
        if not all(isinstance(line, str) and line.strip() for line in self.setup):
            raise ParameterError("setup", list(self.setup), "a list of shell command lines")
        for key, value in self.sbatch.items():
            if not isinstance(key, str) or not key or key.startswith("-"):
                raise ParameterError("sbatch", dict(self.sbatch), "sbatch option names without dashes: {qos: high}")
            if not isinstance(value, (str, int, float, bool)):
                raise ParameterError(f"sbatch.{key}", value, "a string, number or boolean")
