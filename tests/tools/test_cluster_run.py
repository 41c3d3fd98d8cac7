"""``sandbox run RECIPE --launcher submitit``: one run as a one-cell job through submitit's local executor (a
separate process), preempted with USR2 after its first checkpoint, requeued, resumed from that checkpoint and
finished; a second submission of its folder refused while the job runs; ``sandbox run --status``."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest
from test_cluster_sweep import GATE, LOCAL, _children, _until

from sandbox import cli
from sandbox.engine.rundir import RunDir, read_json
from sandbox.tools.sweep import read_jobs
from sandbox.tools.sweep.status import run_status

submitit_launcher = pytest.importorskip(
    "sandbox_plugins.launchers.submitit_launcher", reason="submitit is not installed (the cluster extra)"
)

FAST = ["train.steps=30", "train.checkpoint_every=5", "train.val_every=0", "train.sample_every=0"]
FAST += ["train.log_every=1", "run.threads=1", "eval.num_samples=16", "eval.sample_batch=16"]


def test_a_bad_launcher_section_or_name_is_refused_before_any_folder_or_job(tiny_recipe, tmp_path, capsys):
    assert cli.main(["run", str(tiny_recipe), "--launcher", "submitit", "launcher.timeout_min=0"]) == 2
    assert "recipe key 'launcher.timeout_min': 0" in capsys.readouterr().err
    assert cli.main(["run", str(tiny_recipe), "--launcher", "slurmm"]) == 2
    assert "--launcher slurmm: unknown launcher; expected one of local, submitit" in capsys.readouterr().err
    assert cli.main(["run", str(tiny_recipe), "--wait"]) == 2
    assert cli.main(["run", str(tiny_recipe), "--launcher", "submitit", "--nproc", "2"]) == 2
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow  # one job process, requeued once: about 30 s on 2 busy cores
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the job's process through /proc (Linux)")
def test_one_run_submitted_preempted_and_requeued_finishes_from_its_checkpoint(tiny_recipe, tmp_path, capsys):
    (tmp_path / "gate.py").write_text(GATE)
    pause = tmp_path / "pause"
    pause.touch()
    text = tiny_recipe.read_text().replace("{name: mlp, hidden: 32, layers: 2}", f"{{name: gated, pause: '{pause}'}}")
    tiny_recipe.write_text(f"{text}plugins: [./gate.py]\n{LOCAL}")

    assert cli.main(["run", str(tiny_recipe), "--launcher", "submitit", *FAST]) == 0
    out = capsys.readouterr().out
    (run_dir,) = (tmp_path / "runs").glob("tiny-*")
    (job,) = read_jobs(run_dir)
    try:
        _preempt(run_dir, job, out, pause, capsys)
    finally:  # no job outlives the test
        if submitit_launcher._controller_alive(job["job_id"]):
            os.kill(int(job["job_id"]), signal.SIGTERM)

    row = run_status(run_dir)
    assert row.state == "done" and row.job == job["job_id"]
    summary = read_json(RunDir(run_dir).summary)
    assert isinstance(summary, dict) and summary["run_dir"] == str(run_dir)
    log = Path(job["stdout"]).read_text()
    resumed = re.search(r"resuming at step (\d+) of 30", log)
    assert resumed and 5 <= int(resumed.group(1)) < 30, log  # the requeued job resumed from the checkpoint
    assert "Requeued job" in Path(job["stderr"]).read_text() + log
    lines = [json.loads(line) for line in RunDir(run_dir).metrics.read_text().splitlines()]
    assert [r["step"] for r in lines if "train_loss" in r] == list(range(1, 31))  # no step trained twice
    assert len(read_jobs(run_dir)) == 1  # the requeue is the same job
    assert cli.main(["run", "--status", str(run_dir)]) == 0
    assert "done" in capsys.readouterr().out


def _preempt(run_dir: Path, job: dict, out: str, pause: Path, capsys) -> None:
    for shown in (job["job_id"], job["stdout"], job["stderr"], str(run_dir)):
        assert shown in out, shown
    assert f"sandbox run --status {run_dir}" in out
    assert f"sandbox run --resume {run_dir} --launcher submitit" in out
    assert job["cells"] == [run_dir.name] and job["task"]["run_dir"] == str(run_dir)
    _until(lambda: list(RunDir(run_dir).checkpoints.glob("step_*.pt")), "the first checkpoint")

    # in flight: the same folder is not submitted again
    assert cli.main(["run", "--resume", str(run_dir), "--launcher", "submitit"]) == 1
    assert f"not submitted, it is in job {job['job_id']}" in capsys.readouterr().err
    assert len(read_jobs(run_dir)) == 1
    row = run_status(run_dir)
    assert row.state == "running" and "checkpoint at step 5" in row.detail, row

    # preemption: USR2 to the job's process; the trainer checkpoints and submitit requeues the job
    (task,) = _children(int(job["job_id"]))
    os.kill(task, signal.SIGUSR2)
    pause.unlink()
    _until(lambda: run_status(run_dir).state not in ("queued", "running"), "the job to end", timeout=120)
