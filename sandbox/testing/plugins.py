"""Throwaway plugins and faked installed distributions, for tests of the plugin machinery."""

from __future__ import annotations

import contextlib
import importlib.metadata
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from sandbox.registry import Registry, load_registry, use_registry


@contextlib.contextmanager
def register_plugin(plugin: Any, name: str = "throwaway-plugin") -> Iterator[Registry]:
    """A registry of the installed plugins plus ``plugin`` (a module or an object with hook methods).

    Inside the block :func:`sandbox.registry.get_registry` returns it too
    (:func:`sandbox.registry.use_registry`), so code under test
    (``sandbox.cli.main``, ``load_recipe``) sees the plugin; afterwards it is gone::

        with register_plugin(MyPlugin()) as registry:
            check_sampler("mine", registry=registry)
    """
    with use_registry(load_registry({name: plugin})) as registry:
        yield registry


class _FakeDistribution:
    """Just enough of :class:`importlib.metadata.Distribution` for entry-point loading."""

    def __init__(self, name: str, version: str, entry_points: list[importlib.metadata.EntryPoint]):
        self.metadata = {"Name": name}
        self.version = version
        self.entry_points = entry_points


@contextlib.contextmanager
def fake_distribution(
    name: str, version: str, entry_points: dict[str, str], modules: dict[str, ModuleType] | None = None
) -> Iterator[None]:
    """Pretend distribution ``name`` is installed, with ``sandbox`` entry points ``{entry name: module}``.

    ``modules`` are put in ``sys.modules`` for the block (an entry point may
    also name a module that does not exist, to test a failing import). Inside
    the block :func:`sandbox.registry.get_registry` is the registry loaded with it.
    """
    eps = [importlib.metadata.EntryPoint(name=n, value=v, group="sandbox") for n, v in entry_points.items()]
    real = importlib.metadata.distributions
    saved_modules = {m: sys.modules.get(m) for m in (modules or {})}

    def distributions(**kwargs: Any) -> Iterator[Any]:
        yield from real(**kwargs)
        yield _FakeDistribution(name, version, eps)

    importlib.metadata.distributions = distributions
    sys.modules.update(modules or {})
    try:
        with use_registry(load_registry()):
            yield
    finally:
        importlib.metadata.distributions = real
        for module_name, module in saved_modules.items():
            if module is None:
                sys.modules.pop(module_name, None)
            else:
                sys.modules[module_name] = module
