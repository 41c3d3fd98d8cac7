"""The TensorBoard logger: ``tensorboard --logdir runs`` shows every run's curves, sample grids and recipe.

Writes through :class:`torch.utils.tensorboard.SummaryWriter` (the
``tensorboard`` package: ``pip install 'diffusion-sandbox[tensorboard]'``)
into ``<run folder>/<log_dir>``: one scalar per numeric key of each
``metrics.jsonl`` line (``train_loss``, ``val_loss_ema``, ``lr``, ...), each
sample grid as the image ``samples`` at its step, the resolved recipe as the
text ``recipe``, and at the end the final figures of ``summary.json`` under
``final/``. A resumed run drops the events after the step it resumes from,
as ``metrics.jsonl`` does.
"""

from __future__ import annotations

import importlib.util
import math
from typing import Any

from sandbox import hookimpl


def _numbers(data: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(_numbers(value, f"{prefix}{key}/"))
    elif isinstance(data, (int, float)) and not isinstance(data, bool) and math.isfinite(data):
        out[prefix[:-1]] = float(data)
    return out


class TensorBoardLogger:
    """One run's TensorBoard event files."""

    def __init__(self, params: Any) -> None:
        if importlib.util.find_spec("tensorboard") is None:
            raise ImportError(
                "TensorBoard logging needs the tensorboard package: pip install 'diffusion-sandbox[tensorboard]'"
            )
        self.params = params
        self.writer: Any = None

    @hookimpl
    def on_run_start(self, run):
        import yaml
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(
            str(run.run_dir / self.params.log_dir),
            flush_secs=self.params.flush_secs,
            purge_step=run.start_step + 1 if run.start_step else None,
        )
        text = yaml.safe_dump(dict(run.recipe), sort_keys=False)
        self.writer.add_text("recipe", "    " + text.replace("\n", "\n    "), run.start_step)  # markdown code

    @hookimpl
    def on_metrics(self, step, record):
        for key, value in _numbers(record).items():
            self.writer.add_scalar(key, value, step)

    @hookimpl
    def on_samples(self, step, images):
        self.writer.add_image("samples", images.float().clamp(0, 1), step)

    @hookimpl
    def on_run_end(self, status, summary):
        if self.writer is None:
            return
        step = summary.get("train", {}).get("steps") or summary.get("step") or 0
        for key, value in _numbers({k: summary[k] for k in ("train", "sample_quality") if k in summary}).items():
            self.writer.add_scalar(f"final/{key}", value, step)
        self.writer.add_text("status", f"{status}: {summary.get('message', '')}".rstrip(": "), step)
        self.writer.close()
