"""Built-in loggers: the run's events, also where researchers look (``run.loggers: [tensorboard]``)."""

from sandbox_plugins.loggers.params import TensorBoardParams

from sandbox import hookimpl


@hookimpl
def register_loggers(register):
    register("tensorboard", "sandbox_plugins.loggers.tensorboard:TensorBoardLogger", params=TensorBoardParams)
