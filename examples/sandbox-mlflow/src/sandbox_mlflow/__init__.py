"""A diffusion-sandbox plugin: the ``mlflow`` logger (``run.loggers: [mlflow]``).

This module stays light (``sandbox list`` imports it): mlflow itself is
imported by :mod:`sandbox_mlflow.logger`, only when a run enables the logger.
"""

from dataclasses import dataclass

from sandbox import hookimpl

__version__ = "0.1.0"


@dataclass
class MLflowParams:
    """MLflow tracking: metrics, sample grids, the recipe as parameters and recipe.yaml, the final figures."""

    # fmt: off
    tracking_uri: str = ""         # file:/path, sqlite:///mlflow.db or http://host:5000; "": MLFLOW_TRACKING_URI
    experiment: str = ""           # experiment name; "": MLFLOW_EXPERIMENT_NAME, else the recipe's name
    # fmt: on


@hookimpl
def register_loggers(register):
    register("mlflow", "sandbox_mlflow.logger:MLflowLogger", params=MLflowParams)
