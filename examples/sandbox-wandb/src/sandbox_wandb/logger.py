"""One sandbox run as one W&B run.

The W&B run is named after the run folder, keeps its files in the run folder
(``wandb/``), and has the resolved recipe as its config; each
``metrics.jsonl`` line is logged at its step, each sample grid as the image
``samples``, the newest checkpoint's path and the final figures of
``summary.json`` (``final/...``) go to the run's summary. The W&B run id is kept
in the run folder (``wandb_run_id``), so ``sandbox run --resume`` continues the
same W&B run. In ``WANDB_MODE=offline`` nothing leaves the machine; ``wandb
sync RUN_DIR/wandb/offline-run-*`` uploads it later.
"""

from __future__ import annotations

import math
import os
import uuid
from typing import Any

import wandb

from sandbox import hookimpl

RUN_ID_FILE = "wandb_run_id"


def numbers(data: Any, prefix: str = "") -> dict[str, float]:
    """The finite numbers of a nested mapping, by ``/``-joined key."""
    if isinstance(data, dict):
        out: dict[str, float] = {}
        for key, value in data.items():
            out.update(numbers(value, f"{prefix}{key}/"))
        return out
    if isinstance(data, (int, float)) and not isinstance(data, bool) and math.isfinite(data):
        return {prefix[:-1]: float(data)}
    return {}


class WandbLogger:
    """Sends one run's events to Weights & Biases."""

    def __init__(self, params: Any) -> None:
        self.params = params
        self.run: Any = None

    @hookimpl
    def on_run_start(self, run):
        id_file = run.run_dir / RUN_ID_FILE
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:8]
        id_file.write_text(run_id + "\n")
        self.run = wandb.init(
            project=self.params.project or os.environ.get("WANDB_PROJECT") or "diffusion-sandbox",
            entity=self.params.entity or None,
            group=self.params.group or None,
            tags=list(self.params.tags) or None,
            mode=self.params.mode or None,
            name=run.run_dir.name,
            id=run_id,
            resume="allow",  # sandbox run --resume continues the same W&B run
            dir=str(run.run_dir),
            config=dict(run.recipe),
            settings=wandb.Settings(console="off"),  # the sandbox's own progress bar stays as it is
        )

    @hookimpl
    def on_metrics(self, step, record):
        self.run.log(numbers(record), step=step)

    @hookimpl
    def on_samples(self, step, images):
        picture = (images.float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
        self.run.log({"samples": wandb.Image(picture)}, step=step)

    @hookimpl
    def on_checkpoint(self, path):
        self.run.summary["checkpoint"] = str(path)

    @hookimpl
    def on_run_end(self, status, summary):
        if self.run is None:
            return
        figures = {"train": summary.get("train"), "quality": summary.get("sample_quality")}
        self.run.summary.update({f"final/{k}": v for k, v in numbers(figures).items()})
        self.run.summary["status"] = status
        self.run.finish(exit_code=0 if status == "finished" else 1)
