"""A diffusion-sandbox plugin: the ``wandb`` logger (``run.loggers: [wandb]``).

This module stays light (``sandbox list`` imports it): wandb itself is
imported by :mod:`sandbox_wandb.logger`, only when a run enables the logger.
"""

from dataclasses import dataclass, field

from sandbox import hookimpl
from sandbox.errors import ParameterError

__version__ = "0.1.0"

MODES = ("", "online", "offline", "disabled")


@dataclass
class WandbParams:
    """Weights & Biases: metrics, sample grids, the recipe as the run's config, the final figures as its summary."""

    # fmt: off
    project: str = ""              # "": WANDB_PROJECT, else diffusion-sandbox
    entity: str = ""               # user or team; "": WANDB_ENTITY, else your default entity
    group: str = ""                # runs shown together in the UI (e.g. one sweep); "": none
    tags: list[str] = field(default_factory=list)  # labels of the run in the UI
    mode: str = ""                 # online, offline (sync later: wandb sync) or disabled; "": WANDB_MODE, else online
    # fmt: on

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ParameterError("mode", self.mode, "online, offline, disabled, or empty for WANDB_MODE")


@hookimpl
def register_loggers(register):
    register("wandb", "sandbox_wandb.logger:WandbLogger", params=WandbParams)
