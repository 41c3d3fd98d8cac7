"""Run events: the loggers a recipe enables (``run.loggers``) and the engine's calls to their hooks.

Each logger is built from its registry entry when the run starts and
registered, under ``logger:<name>``, in a plugin manager of the run's own
that knows the run-event hooks of :mod:`sandbox.hookspecs`, so pluggy checks
its hook names and arguments before any work. The engine calls
:meth:`RunEvents.emit` in the main process only (rank 0 under torchrun; the
other processes hold no logger), and ``metrics.jsonl`` stays the record of
truth. A logger whose hook raises does not stop the run: its first failure is
reported as one warning naming the logger and its plugin, and its later
failures are silent.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Optional

from sandbox.engine.rundir import RunDir, read_json
from sandbox.errors import RecipeError
from sandbox.plugins import new_plugin_manager
from sandbox.protocols import RunInfo
from sandbox.registry import Component, get_registry

#: the run-event hooks, in the order a run calls them
EVENTS = ("on_run_start", "on_metrics", "on_samples", "on_checkpoint", "on_run_end")


@dataclass
class Logger:
    """One enabled logger: its recipe key, registry entry and the object its ``build`` returned."""

    key: str
    component: Component
    obj: object

    @property
    def label(self) -> str:
        return f"logger '{self.component.name}' from {self.component.provider}"


class RunEvents:
    """The enabled loggers of one run, and the run-event calls to them (an empty one does nothing)."""

    def __init__(self, loggers: tuple[Logger, ...] | list[Logger] = ()) -> None:
        self.pm = new_plugin_manager()
        self.loggers = {f"logger:{logger.component.name}": logger for logger in loggers}
        self.failed: dict[str, int] = {}  # plugin name -> failures so far
        self.run: Optional[RunInfo] = None
        self.ended = False
        for name, logger in self.loggers.items():
            try:
                self.pm.register(logger.obj, name=name)
                self.pm.check_pending()  # a misspelled hook (on_metric) fails here, not silently
            except Exception as exc:
                raise RecipeError(f"recipe key '{logger.key}': {logger.label} is not a valid logger: {exc}") from exc
            if not {caller.name for caller in self.pm.get_hookcallers(logger.obj) or []} & set(EVENTS):
                raise RecipeError(
                    f"recipe key '{logger.key}': {logger.label} implements no run-event hook "
                    f"({', '.join(EVENTS)}); mark its methods with @sandbox.hookimpl"
                )

    def start(self, run: RunInfo) -> None:
        """Call ``on_run_start``; until then, and after ``on_run_end``, :meth:`emit` does nothing."""
        self.run = run
        self.emit("on_run_start")

    def emit(self, event: str, **kwargs: Any) -> None:
        """Call ``event`` on every enabled logger that implements it, one logger at a time."""
        if self.run is None or self.ended or not self.loggers:
            return
        plugins = self.pm.get_plugins()
        for impl in getattr(self.pm.hook, event).get_hookimpls():
            others = [p for p in plugins if p is not impl.plugin]
            try:
                self.pm.subset_hook_caller(event, remove_plugins=others)(run=self.run, **kwargs)
            except Exception as exc:
                self._failed(impl.plugin_name, event, exc)

    def end(self, status: str, summary: dict[str, Any]) -> None:
        """Call ``on_run_end`` once."""
        self.emit("on_run_end", status=status, summary=summary)
        self.ended = True

    def end_after(self, exc: BaseException) -> None:
        """Call ``on_run_end`` for a run stopped by ``exc`` (interrupted, diverged or failed), if not yet called."""
        if self.run is None or self.ended or not self.loggers:
            return
        from sandbox.errors import Diverged, Interrupted

        status = "diverged" if isinstance(exc, Diverged) else "failed"
        if isinstance(exc, (Interrupted, KeyboardInterrupt)):
            status = "interrupted"
        recorded = read_json(RunDir(self.run.run_dir).status) or {}
        summary = {"step": recorded.get("step"), "message": str(exc) or type(exc).__name__}
        self.end(status, summary)

    def _failed(self, name: str, event: str, exc: Exception) -> None:
        self.failed[name] = self.failed.get(name, 0) + 1
        if self.failed[name] == 1:
            warnings.warn(
                f"{self.loggers[name].label} failed in {event} ({type(exc).__name__}: {exc}); the run goes on, "
                "metrics.jsonl keeps every record, and this logger's later failures are not reported",
                stacklevel=2,
            )


def enabled_loggers(recipe: Any, *, main: bool = True) -> RunEvents:
    """The recipe's loggers, built, in the main process (``main``); an empty :class:`RunEvents` elsewhere.

    Called before any work: an unknown logger, one whose ``build`` fails (its
    package is not installed) or whose hooks are invalid stops the run with a
    message naming its ``run.loggers`` entry.
    """
    if not main or not recipe.loggers:
        return RunEvents()
    registry = recipe.registry if recipe.registry is not None else get_registry()
    built = []
    for i, (name, params) in enumerate(recipe.loggers):
        key = f"run.loggers[{i}]"
        component = registry.get("logger", name, key=key)
        try:
            obj = component.build(params)
        except RecipeError:
            raise
        except Exception as exc:
            raise RecipeError(
                f"recipe key '{key}': logger '{name}' from {component.provider} cannot start: {exc}"
            ) from exc
        built.append(Logger(key, component, obj))
    return RunEvents(built)
