"""``sandbox sweep --launcher submitit``: the launcher: section, job states, and a real sweep through submitit's
local executor (jobs as separate processes), with a cell preempted mid-training, requeued and resumed, a rerun
while jobs are in flight, and ``--status``."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from sandbox import cli
from sandbox.errors import SandboxError
from sandbox.recipe import load_recipe
from sandbox.tools.sweep import cell_id, launch_sweep, plan_sweep, read_jobs, sweep_status

submitit_launcher = pytest.importorskip(
    "sandbox_plugins.launchers.submitit_launcher", reason="submitit is not installed (the cluster extra)"
)

LOCAL = "launcher: {name: submitit, executor: local, gpus_per_task: 0, timeout_min: 5}\n"

GATE = '''
"""A small MLP denoiser that, from its 9th call on, waits while the file ``pause`` exists; then fails if ``fail``."""
import os
import time
from dataclasses import dataclass

from sandbox import hookimpl


@dataclass
class GatedParams:
    pause: str = ""
    fail: bool = False


def build(params, shape):
    import torch
    from sandbox_plugins.denoisers.mlp import MLP
    from sandbox_plugins.denoisers.params import MLPParams

    class Gated(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = MLP(MLPParams(hidden=16, layers=1), shape)

            self.calls = 0

        def forward(self, x, c_noise):
            self.calls += 1
            while self.calls > 8 and os.path.exists(params.pause):  # training past its first checkpoint
                time.sleep(0.02)
            if params.fail and self.calls > 8:
                raise RuntimeError("this cell fails on purpose")
            return self.net(x, c_noise)

    return Gated()


@hookimpl
def register_denoisers(register):
    register("gated", build, params=GatedParams)
'''


def quiet() -> Console:
    return Console(record=True, width=250)


def test_the_launcher_section_is_checked_like_a_component_and_leaves_cell_identity_alone(tiny_recipe):
    plain = load_recipe(tiny_recipe)
    with tiny_recipe.open("a") as handle:
        handle.write("launcher: {name: submitit, partition: gpu, timeout_min: 60, sbatch: {qos: high}}\n")
    recipe = load_recipe(tiny_recipe)
    name, params = recipe.launcher
    assert (name, params.partition, params.timeout_min, params.sbatch) == ("submitit", "gpu", 60, {"qos": "high"})
    assert cell_id(recipe) == cell_id(plain)  # where cells run does not change what they compute
    for override, message in [
        ("launcher.timeout_min=0", "recipe key 'launcher.timeout_min': 0; expected an integer >= 1"),
        ("launcher.executor=slrum", "recipe key 'launcher.executor': 'slrum'; expected one of slurm, local"),
        ("launcher.partiton=gpu", "launcher.partiton"),
        ("launcher.sbatch={qos: [a]}", "recipe key 'launcher.sbatch.qos'"),
        ("launcher.name=slurm", "recipe key 'launcher.name': unknown launcher 'slurm'"),
    ]:
        with pytest.raises(SandboxError) as info:
            load_recipe(tiny_recipe, [override])
        assert message in str(info.value), (override, str(info.value))


def test_slurm_states_map_to_queued_running_and_ended():
    phase = submitit_launcher.slurm_phase
    assert [phase(s) for s in ("PENDING", "REQUEUED", "RUNNING", "COMPLETING")] == ["queued"] * 2 + ["running"] * 2
    assert {phase(s) for s in ("COMPLETED", "FAILED", "TIMEOUT", "CANCELLED by 1234", "OUT_OF_MEMORY")} == {"ended"}
    assert phase("UNKNOWN") == phase("") == "unknown"


def test_the_slurm_job_script_carries_the_launcher_section(tiny_recipe, tmp_path, monkeypatch):
    section = "{name: submitit, partition: debug, gpus_per_task: 2, mem_gb: 32, timeout_min: 90, sbatch: {qos: high}}"
    with tiny_recipe.open("a") as handle:
        handle.write(f"launcher: {section}\n")
    params = load_recipe(tiny_recipe, ["launcher.array_parallelism=3"]).launcher[1]
    if shutil.which("srun") is None:  # no SLURM here: a message, not submitit's traceback
        with pytest.raises(SandboxError, match=r"launcher\.executor=local"):
            submitit_launcher.SubmititLauncher(params).executor(tmp_path, "sweep")
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")  # as on a login node
    executor = submitit_launcher.SubmititLauncher(params).executor(tmp_path, "sweep")._executor
    executor.parameters["map_count"] = 5  # an array of five jobs
    script = executor._make_submission_file_text("python -m submitit.core._submit", "uid")
    for line in ["--partition=debug", "--gpus-per-node=2", "--mem=32GB", "--time=90", "--qos=high", "--array=0-4%3"]:
        assert f"#SBATCH {line}\n" in script
    assert "#SBATCH --signal=USR2@120\n" in script and "--ntasks-per-node=1" in script


def test_an_unknown_launcher_and_jobs_with_it_stop_with_a_message(tiny_recipe, capsys):
    assert cli.main(["sweep", str(tiny_recipe), "--launcher", "slurmm"]) == 2
    assert "--launcher slurmm: unknown launcher; expected one of local, submitit" in capsys.readouterr().err
    assert cli.main(["sweep", str(tiny_recipe), "--launcher", "submitit", "--jobs", "2"]) == 2


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _until(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow  # three job processes: about 45 s on 2 busy cores
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the job's process through /proc (Linux)")
def test_local_executor_sweep_requeues_a_preempted_cell_resumes_it_and_never_submits_twice(tiny_recipe, tmp_path):
    (tmp_path / "gate.py").write_text(GATE)
    pause = tmp_path / "pause"
    pause.touch()
    with tiny_recipe.open("a") as handle:
        handle.write(f"plugins: [./gate.py]\n{LOCAL}")
        gated = f"{{name: gated, pause: '{pause}'}}"
        handle.write(f"matrix:\n  denoiser: [{gated}, {{name: gated, pause: '{pause}', fail: true}}]\n")
        handle.write("  sampler.steps: [4, 6]\n")
    fast = ["train.steps=30", "train.checkpoint_every=5", "train.val_every=0", "train.sample_every=0"]
    fast += ["run.threads=1", "eval.num_samples=16", "eval.sample_batch=16"]
    plan = plan_sweep(tiny_recipe, fast)
    sweep = plan.sweep_dir
    assert plan.cells[1].trained_by == 0 and plan.cells[3].trained_by == 2  # they only sample from a training

    try:
        _preempt_and_rerun(tiny_recipe, fast, plan, pause)
    finally:  # no job outlives the test
        for job in read_jobs(sweep):
            if submitit_launcher._controller_alive(job["job_id"]):
                os.kill(int(job["job_id"]), signal.SIGTERM)


def _preempt_and_rerun(tiny_recipe: Path, fast: list[str], plan, pause: Path) -> None:
    sweep = plan.sweep_dir
    gated, failing = plan.cells[0], plan.cells[2]
    rows = launch_sweep(plan, "submitit", console=quiet())
    jobs = read_jobs(sweep)
    assert [job["cells"] for job in jobs] == [[c.id for c in plan.cells[:2]], [c.id for c in plan.cells[2:]]]
    assert {row.state for row in rows} <= {"queued", "running", "failed"}
    training = sweep / "cells" / gated.id
    _until(lambda: list((training / "checkpoints").glob("step_*.pt")), "the first checkpoint")

    # in flight: a second sweep reports the jobs and submits nothing
    console = quiet()
    rows = launch_sweep(plan_sweep(tiny_recipe, fast), "submitit", console=console)
    assert len(read_jobs(sweep)) == 2
    assert "submitted 0 cells in 0 jobs" in console.export_text()
    state = {row.id: row for row in rows}
    assert state[gated.id].state == "running" and state[gated.id].job == jobs[0]["job_id"]
    assert state[plan.cells[1].id].state == "queued"  # after its training, in the same job

    # preemption: USR2 to the job's process; the trainer checkpoints and submitit requeues the job
    controller = int(jobs[0]["job_id"])
    (task,) = _children(controller)
    os.kill(task, signal.SIGUSR2)
    pause.unlink()
    _until(lambda: all(r.state not in ("queued", "running") for r in sweep_status(sweep)), "the jobs to end")

    rows = {row.id: row for row in sweep_status(sweep)}
    assert rows[gated.id].state == rows[plan.cells[1].id].state == "done"
    log = (training / "console.txt").read_text()
    assert "resuming at step" in log and "of 30" in log  # the requeued job resumed the cell from its checkpoint
    assert "Requeued job" in Path(jobs[0]["stderr"]).read_text() + Path(jobs[0]["stdout"]).read_text()
    assert rows[failing.id].state == "failed" and "this cell fails on purpose" in rows[failing.id].detail
    assert rows[failing.id].log == jobs[1]["stderr"] and Path(rows[failing.id].log).exists()
    assert len(read_jobs(sweep)) == 2  # the requeue is the same job, not a second submission

    # sandbox sweep --status prints the same
    assert cli.main(["sweep", "--status", str(sweep)]) == 0


REPO = Path(__file__).resolve().parents[2]


def test_readme_cluster_command_plans_valid_cells_on_the_shipped_recipe_and_shows_the_launcher(tmp_path, capsys):
    """README's ``sandbox sweep recipes/ablation.yaml --launcher submitit launcher.partition=debug``: --launcher sets
    launcher.name itself (every cell was invalid without it), and --dry-run shows the executor, the resources and
    the job array."""
    recipe = str(REPO / "recipes" / "ablation.yaml")
    command = ["sweep", recipe, "--launcher", "submitit", "launcher.partition=debug", f"run.output={tmp_path}"]
    assert cli.main([*command, "--dry-run"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "invalid" not in out and "6 cells (6 to run)" in out
    assert "Launcher submitit" in out and "the recipe's launcher: section" in out
    for key, value in [("executor", "slurm"), ("partition", "debug"), ("gpus_per_task", "1"), ("timeout_min", "240")]:
        assert re.search(rf"{key}\s+│\s+{value}\s", out), key
    assert "Job array: 6 jobs (6 cells) in one submission" in out
    assert not (tmp_path / "sweeps").exists()  # a dry run submits and writes nothing


def test_dry_run_shows_each_job_as_a_training_then_the_cells_sampling_from_it(tiny_recipe, capsys):
    with tiny_recipe.open("a") as handle:
        handle.write("matrix:\n  denoiser.hidden: [16, 32]\n  sampler.steps: [4, 6]\n")
    plan = plan_sweep(tiny_recipe, ["launcher.name=submitit"])
    assert cli.main(["sweep", str(tiny_recipe), "--launcher", "submitit", "launcher.executor=local", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Job array: 2 jobs (4 cells)" in out and re.search(r"executor\s+│\s+local\s", out)
    c = plan.cells
    assert c[1].trained_by == 0 and c[3].trained_by == 2
    for train, sample in [(c[0], c[1]), (c[2], c[3])]:
        assert re.search(rf"#{train.index} {train.id}\s+│\s+#{sample.index} {sample.id}", out), out


def test_launcher_section_refused_by_the_dry_run_like_any_section(tiny_recipe, capsys):
    command = ["sweep", str(tiny_recipe), "--launcher", "submitit", "launcher.timeout_min=0", "--dry-run"]
    assert cli.main(command) == 2
    assert "launcher.timeout_min" in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
@pytest.mark.parametrize("command", ["sweep", "run"])
def test_completion_offers_local_and_the_registered_launchers(tmp_path, command):
    from sandbox.cli.completion import script

    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "sandbox").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m sandbox "$@"\n')
    (bindir / "sandbox").chmod(0o755)
    (bindir / "completion.bash").write_text(script(cli._parser(), "bash"))

    def complete(line: str) -> list[str]:
        words = line.split() + ([""] if line.endswith(" ") else [])
        snippet = (
            f"source {shlex.quote(str(bindir / 'completion.bash'))}\n"
            f"COMP_LINE={shlex.quote(line)}; COMP_POINT=${{#COMP_LINE}}\n"
            f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
            '_shtab_sandbox sandbox; printf "%s\\n" "${COMPREPLY[@]}"\n'
        )
        env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
        result = subprocess.run(["bash", "-c", snippet], capture_output=True, text=True, cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        return [word for word in result.stdout.splitlines() if word]

    assert set(complete(f"sandbox {command} r.yaml --launcher ")) == {"local", "submitit"}
    assert complete(f"sandbox {command} r.yaml --launcher lo") == ["local"]
    assert "_sandbox_option_launcher" in script(cli._parser(), "zsh")
