"""Plugin discovery, registration and the registry's errors."""

from __future__ import annotations

import importlib.metadata
import sys
import types
from dataclasses import dataclass

import pluggy
import pytest

from sandbox import hookimpl
from sandbox.errors import RegistryError
from sandbox.plugins import load_entry_points, new_plugin_manager
from sandbox.registry import KINDS, collect, get_registry


@dataclass
class HalfParams:
    """A made-up schedule for registry tests."""

    slope: float = 0.5


def build_half(params):
    return ("half", params.slope)


class FakeDist:
    """Just enough of importlib.metadata.Distribution for entry-point loading."""

    def __init__(self, name: str, version: str, entry_points: list[importlib.metadata.EntryPoint]):
        self.metadata = {"Name": name}
        self.version = version
        self.entry_points = entry_points


def fake_module(monkeypatch, name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    monkeypatch.setitem(sys.modules, name, module)
    return module


def ep(name: str, module: str) -> importlib.metadata.EntryPoint:
    return importlib.metadata.EntryPoint(name=name, value=module, group="sandbox")


@pytest.fixture
def third_party(monkeypatch):
    """A third-party distribution 'sandbox-half' with one schedule, found through entry points."""

    @hookimpl
    def register_schedules(register):
        register("half", build_half, params=HalfParams)

    fake_module(monkeypatch, "sandbox_half", register_schedules=register_schedules)
    real = list(importlib.metadata.distributions())
    dists = real + [FakeDist("sandbox-half", "1.2.3", [ep("half", "sandbox_half")])]
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: iter(dists))
    return dists


def fresh_registry():
    pm = new_plugin_manager()
    loaded, failures = load_entry_points(pm)
    return collect(pm, loaded, failures)


def test_builtins_register_through_entry_points():
    registry = get_registry()
    for kind in KINDS:
        assert registry.names(kind), f"no built-in {kind}"
        for name in registry.names(kind):
            component = registry.get(kind, name)
            assert component.distribution == "diffusion-sandbox"
            assert component.version
            assert component.description


def test_third_party_entry_point_is_discovered_with_its_distribution(third_party):
    registry = fresh_registry()
    half = registry.get("schedule", "half")
    assert (half.distribution, half.version) == ("sandbox-half", "1.2.3")
    assert half.provider == "sandbox-half 1.2.3"
    assert half.build(None) == ("half", 0.5)
    assert "cosine" in registry.names("schedule")  # built-ins still there


def test_sandbox_plugins_variable_limits_third_party_plugins(third_party, monkeypatch):
    monkeypatch.setenv("SANDBOX_PLUGINS", "")
    registry = fresh_registry()
    assert "half" not in registry.names("schedule")
    assert "cosine" in registry.names("schedule"), "built-ins always load"
    monkeypatch.setenv("SANDBOX_PLUGINS", "sandbox-half")
    assert "half" in fresh_registry().names("schedule")
    monkeypatch.setenv("SANDBOX_PLUGINS", "something-else")
    assert "half" not in fresh_registry().names("schedule")


def test_plugin_that_fails_to_import_is_reported_and_the_rest_works(monkeypatch):
    real = list(importlib.metadata.distributions())
    dists = real + [FakeDist("sandbox-broken", "0.1", [ep("broken", "sandbox_broken_does_not_exist")])]
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: iter(dists))
    registry = fresh_registry()
    assert [f.distribution for f in registry.failures] == ["sandbox-broken"]
    assert "ModuleNotFoundError" in registry.failures[0].reason
    assert "cosine" in registry.names("schedule")
    with pytest.raises(RegistryError, match="sandbox-broken"):
        registry.get("schedule", "broken-one")


def test_misspelled_hook_implementation_fails_loudly(monkeypatch):
    @hookimpl
    def register_schedule(register):  # missing the final 's'
        pass

    fake_module(monkeypatch, "sandbox_typo", register_schedule=register_schedule)
    real = list(importlib.metadata.distributions())
    dists = real + [FakeDist("sandbox-typo", "0.1", [ep("typo", "sandbox_typo")])]
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: iter(dists))
    registry = fresh_registry()
    assert any(f.distribution == "sandbox-typo" and "register_schedule" in f.reason for f in registry.failures)


class DuplicateCosine:
    @hookimpl
    def register_schedules(self, register):
        register("cosine", build_half, params=HalfParams)


def test_duplicate_name_is_an_error_naming_both_providers():
    pm = new_plugin_manager()
    loaded, failures = load_entry_points(pm)
    pm.register(DuplicateCosine(), name="duplicate-cosine")
    try:
        with pytest.raises(RegistryError) as info:
            collect(pm, loaded, failures)
    finally:
        pm.unregister(name="duplicate-cosine")
    message = str(info.value)
    assert "cosine" in message and "duplicate-cosine" in message and "diffusion-sandbox" in message


class BadRegistration:
    @hookimpl
    def register_samplers(self, register):
        register("fine", build_half)
        register("Not A Name", build_half)


def test_invalid_registration_is_recorded_as_a_failure_of_that_plugin():
    pm = new_plugin_manager()
    loaded, failures = load_entry_points(pm)
    pm.register(BadRegistration(), name="bad-registration")
    try:
        registry = collect(pm, loaded, failures)
    finally:
        pm.unregister(name="bad-registration")
    assert "fine" not in registry.names("sampler"), "a broken plugin's partial registrations are dropped"
    assert "ddim" in registry.names("sampler")
    assert any("Not A Name" in f.reason for f in registry.failures)


@pytest.mark.parametrize("kwargs, expected", [
    ({"build": 42}, "expected a callable"),
    ({"build": build_half, "params": dict}, "expected a dataclass"),
])
def test_register_validates_its_arguments(kwargs, expected):
    class Plugin:
        @hookimpl
        def register_datasets(self, register):
            register("x", **kwargs)

    pm = pluggy.PluginManager("sandbox")
    from sandbox import hookspecs

    pm.add_hookspecs(hookspecs)
    pm.register(Plugin(), name="args")
    registry = collect(pm)
    assert expected in registry.failures[0].reason


def test_unknown_name_lists_registered_and_suggests_closest():
    registry = get_registry()
    with pytest.raises(RegistryError) as info:
        registry.get("schedule", "cosin", key="schedule.name")
    message = str(info.value)
    assert "recipe key 'schedule.name'" in message
    assert "Did you mean 'cosine'?" in message
    assert "linear" in message


def test_lazy_build_reference_that_does_not_import_names_the_plugin():
    class Plugin:
        @hookimpl
        def register_datasets(self, register):
            register("ghost", "no_such_module_anywhere:build")

    pm = new_plugin_manager()
    pm.register(Plugin(), name="ghost-plugin")
    component = collect(pm).get("dataset", "ghost")
    with pytest.raises(RegistryError, match="ghost-plugin"):
        component.build()


def test_trace_switch_prints_hook_calls(monkeypatch, capsys):
    monkeypatch.setenv("SANDBOX_TRACE", "1")
    fresh_registry()
    assert "register_schedules" in capsys.readouterr().err
