"""One sandbox run as one MLflow run, through :class:`mlflow.tracking.MlflowClient` (no global active run).

The run is named after the run folder and tagged with its path; the resolved
recipe is logged as parameters (dotted keys, ``train.lr``) and as the
artifact ``recipe.yaml``; each ``metrics.jsonl`` line as metrics at its step;
each sample grid as ``samples/step_NNNNNN.png``; the newest checkpoint's path
as the tag ``sandbox.engine.checkpoint``; the final figures of ``summary.json`` as
``final.*`` metrics. The MLflow run id is kept in the run folder
(``mlflow_run_id``), so ``sandbox run --resume`` continues the same MLflow run.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import yaml
from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient

from sandbox import hookimpl

RUN_ID_FILE = "mlflow_run_id"
STATUS = {"finished": "FINISHED", "interrupted": "KILLED", "diverged": "FAILED", "failed": "FAILED"}


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys."""
    if not isinstance(data, dict):
        return {prefix[:-1]: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(flatten(value, f"{prefix}{key}."))
    return out


def numbers(data: Any) -> dict[str, float]:
    """The finite numbers of a nested mapping, by dotted key."""
    return {
        k: float(v)
        for k, v in flatten(data).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


class MLflowLogger:
    """Sends one run's events to MLflow."""

    def __init__(self, params: Any) -> None:
        self.params = params
        self.client: Any = None
        self.run_id = ""

    def _metrics(self, values: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    @hookimpl
    def on_run_start(self, run):
        self.client = MlflowClient(self.params.tracking_uri or None)
        id_file = run.run_dir / RUN_ID_FILE
        if run.start_step and id_file.is_file():  # sandbox run --resume: the same MLflow run
            self.run_id = id_file.read_text().strip()
            self.client.update_run(self.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            return
        name = self.params.experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or run.name
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        created = self.client.create_run(
            experiment_id, run_name=run.run_dir.name, tags={"sandbox.run_dir": str(run.run_dir)}
        )
        self.run_id = created.info.run_id
        id_file.write_text(self.run_id + "\n")
        params = [Param(k, str(v)[:6000]) for k, v in flatten(dict(run.recipe)).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=params[start : start + 100])
        self.client.log_text(self.run_id, yaml.safe_dump(dict(run.recipe), sort_keys=False), "recipe.yaml")

    @hookimpl
    def on_metrics(self, step, record):
        self._metrics(numbers(record), step)

    @hookimpl
    def on_samples(self, step, images):
        picture = (images.float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
        self.client.log_image(self.run_id, picture, artifact_file=f"samples/step_{step:06d}.png")

    @hookimpl
    def on_checkpoint(self, path):
        self.client.set_tag(self.run_id, "sandbox.engine.checkpoint", str(path))

    @hookimpl
    def on_run_end(self, status, summary):
        if not self.run_id:
            return
        figures = {"train": summary.get("train"), "quality": summary.get("sample_quality")}
        step = (summary.get("train") or {}).get("steps") or summary.get("step") or 0
        self._metrics({f"final.{k}": v for k, v in numbers(figures).items()}, int(step))
        if status != "finished":
            self.client.set_tag(self.run_id, "sandbox.stopped", f"{status}: {summary.get('message', '')}")
        self.client.set_terminated(self.run_id, STATUS.get(status, "FAILED"))
