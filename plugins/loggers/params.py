"""Parameters of the built-in loggers (torch-free, so ``sandbox list`` and recipe checks stay fast)."""

from dataclasses import dataclass

from sandbox.errors import ParameterError
from sandbox.params import at_least


@dataclass
class TensorBoardParams:
    """TensorBoard event files: scalars from metrics.jsonl, sample grids as images, the resolved recipe as text."""

    # fmt: off
    log_dir: str = "tensorboard"   # folder of the event files, inside the run folder
    flush_secs: int = 30           # seconds between writes of pending events to disk
    # fmt: on

    def __post_init__(self) -> None:
        at_least(self, "flush_secs", 1)
        if not self.log_dir.strip() or self.log_dir.startswith(("/", "..")):
            raise ParameterError("log_dir", self.log_dir, "a folder name inside the run folder")
