"""Plugin discovery, registration and the registry's errors."""

from __future__ import annotations

import importlib.metadata
import sys
import types
from dataclasses import dataclass

import pluggy
import pytest

from sandbox import cli, hookimpl
from sandbox.errors import DuplicateComponentError, RegistryError
from sandbox.plugins import new_plugin_manager
from sandbox.registry import KINDS, collect, get_registry, load_registry, use_registry


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
    return load_registry()


def test_builtins_register_through_entry_points(monkeypatch):
    monkeypatch.setenv("SANDBOX_PLUGINS", "")  # the built-ins only (an example plugin may be installed)
    registry = fresh_registry()
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


def test_duplicate_name_disables_only_that_name_and_names_both_providers(capsys):
    registry = load_registry({"duplicate-cosine": DuplicateCosine()})
    assert "cosine" not in registry.names("schedule") and "linear" in registry.names("schedule")
    assert sorted(c.plugin for c in registry.clash("schedule", "cosine")) == ["duplicate-cosine", "schedules"]
    with pytest.raises(DuplicateComponentError) as info:
        registry.get("schedule", "cosine", key="schedule.name")
    message = str(info.value)
    assert message.startswith("recipe key 'schedule.name': two schedules are named 'cosine'")
    assert "duplicate-cosine" in message and "diffusion-sandbox" in message and "SANDBOX_PREFER" in message
    with use_registry(registry):  # every command still works; list and plugins show the clash
        assert cli.main(["list"]) == 0
        out, err = capsys.readouterr()
        assert "disabled" in out and "schedule 'cosine' is registered by" in " ".join(err.split())
        assert cli.main(["plugins"]) == 0
        assert "(clash)" in capsys.readouterr().out


def test_sandbox_prefer_overrides_a_builtin_on_purpose(monkeypatch):
    monkeypatch.setenv("SANDBOX_PREFER", "duplicate-cosine")
    registry = load_registry({"duplicate-cosine": DuplicateCosine()})
    assert registry.get("schedule", "cosine").plugin == "duplicate-cosine"
    assert registry.get("schedule", "cosine").build(None) == ("half", 0.5)
    assert len(registry.clash("schedule", "cosine")) == 2  # still reported


class BadRegistration:
    @hookimpl
    def register_samplers(self, register):
        register("fine", build_half)
        register("Not A Name", build_half)


def test_invalid_registration_is_recorded_as_a_failure_of_that_plugin():
    registry = load_registry({"bad-registration": BadRegistration()})
    assert "fine" not in registry.names("sampler"), "a broken plugin's partial registrations are dropped"
    assert "ddim" in registry.names("sampler")
    assert any("Not A Name" in f.reason for f in registry.failures)


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"build": 42}, "expected a callable"),
        ({"build": build_half, "params": dict}, "expected a dataclass"),
    ],
)
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


def test_plugin_calling_sys_exit_while_loading_is_a_broken_plugin(monkeypatch):
    class Exits(types.ModuleType):
        def __getattr__(self, name):
            raise SystemExit(3)

    real = list(importlib.metadata.distributions())
    dists = real + [FakeDist("sandbox-exits", "0.1", [ep("exits", "sandbox_exits:attr")])]
    monkeypatch.setitem(sys.modules, "sandbox_exits", Exits("sandbox_exits"))
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: iter(dists))
    registry = fresh_registry()
    assert [(f.distribution, f.reason) for f in registry.failures] == [
        ("sandbox-exits", "called sys.exit(3) while loading")
    ]
    assert "cosine" in registry.names("schedule")


def test_module_without_hook_implementations_and_unknown_selection_warn(monkeypatch, capsys):
    def register_schedules(register):  # the forgotten @hookimpl
        register("forgotten", build_half)

    fake_module(monkeypatch, "sandbox_forgot", register_schedules=register_schedules)
    real = list(importlib.metadata.distributions())
    dists = real + [FakeDist("sandbox-forgot", "0.1", [ep("forgot", "sandbox_forgot")])]
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: iter(dists))
    monkeypatch.setenv("SANDBOX_PLUGINS", "sandbox-forgot,sandbox-typo-in-name")
    monkeypatch.setenv("SANDBOX_TRACE", "1")
    registry = fresh_registry()
    assert any("sandbox-forgot:forgot" in w and "@sandbox.hookimpl" in w for w in registry.warnings)
    assert any("'sandbox-typo-in-name'" in w and "no installed distribution" in w for w in registry.warnings)
    assert "@sandbox.hookimpl" in capsys.readouterr().err  # SANDBOX_TRACE prints them as they happen
    monkeypatch.delenv("SANDBOX_TRACE")
    with use_registry(registry):
        assert cli.main(["plugins"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "implements no hook" in err and "sandbox-typo-in-name" in err
