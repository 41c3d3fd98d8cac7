"""Local plugins named by a recipe (``plugins:``), and broken plugins reported without stopping the rest."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import yaml

from sandbox import cli, hookimpl
from sandbox.errors import DuplicateComponentError, RecipeError
from sandbox.recipe import load_recipe
from sandbox.registry import get_registry
from sandbox.testing import fake_distribution

PLUGIN = '''
"""A local plugin: a schedule and a renamed sampler, next to the recipe that uses them."""

from dataclasses import dataclass

from sandbox import hookimpl
from sandbox_plugins.samplers.params import DDIMParams


@dataclass
class SymmetricParams:
    """Variance preserving, log-SNR linear from top to -top."""

    top: float = 6.0


def build(params):
    import torch

    from sandbox.schedule import Schedule

    class Symmetric(Schedule):
        def alpha_sigma(self, t):
            lambda_ = params.top * (1.0 - 2.0 * torch.as_tensor(t))
            return torch.sigmoid(lambda_).sqrt(), torch.sigmoid(-lambda_).sqrt()

    return Symmetric()


@hookimpl
def register_schedules(register):
    register("symmetric", build, params=SymmetricParams)


@hookimpl
def register_samplers(register):
    register("local-ddim", "sandbox_plugins.samplers.ddim:build", params=DDIMParams)
'''

TINY = """
dataset: {{name: toy2d, shape: moons, n_train: 256, n_val: 64}}
schedule: {{name: symmetric, top: 5}}
denoiser: {{name: mlp, hidden: 32, layers: 2}}
sampler: {{name: local-ddim, steps: 6}}
train: {{steps: 12, batch_size: 64, log_every: 6, val_every: 0, sample_every: 0, warmup_steps: 2}}
eval: {{val_batches: 1, num_samples: 32, sample_batch: 32, grid_samples: 16}}
run: {{device: cpu, seed: 0, output: {output}}}
"""


@pytest.fixture
def recipe_with_plugin(tmp_path: Path) -> Path:
    (tmp_path / "my_plugin.py").write_text(PLUGIN)
    path = tmp_path / "local.yaml"
    path.write_text("plugins: [my_plugin.py]\n" + TINY.format(output=tmp_path / "runs"))
    return path


def test_file_plugin_next_to_the_recipe_registers_and_the_cli_run_uses_it(recipe_with_plugin, tmp_path, capsys):
    assert cli.main(["run", str(recipe_with_plugin)]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    plugin = f"local:{tmp_path / 'my_plugin.py'}"
    assert summary["components"]["schedule"]["plugin"] == plugin
    assert summary["components"]["sampler"]["plugin"] == plugin
    assert summary["components"]["schedule"]["params"] == {"top": 5.0}
    saved = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    assert saved["plugins"] == [str(tmp_path / "my_plugin.py")]  # absolute: the run folder's copy still works
    assert load_recipe(run_dir / "recipe.yaml").components["schedule"][0] == "symmetric"
    assert "symmetric" not in get_registry().names("schedule"), "a recipe's plugins stay out of the global registry"


def test_resolved_recipe_and_show_keep_the_list_and_the_registry(recipe_with_plugin, tmp_path, tiny_recipe, capsys):
    recipe = load_recipe(recipe_with_plugin)
    assert recipe.plugins == [str(tmp_path / "my_plugin.py")]
    assert recipe.to_dict()["plugins"] == recipe.plugins
    assert recipe.registry.get("schedule", "symmetric").provider == f"local:{tmp_path / 'my_plugin.py'}"
    assert cli.main(["show", str(recipe_with_plugin)]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["plugins"] == recipe.plugins
    assert load_recipe(tiny_recipe).to_dict()["plugins"] == []


def test_paths_in_a_base_recipe_resolve_against_the_base_and_the_lists_add_up(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "my_plugin.py").write_text(PLUGIN)
    (lib / "base.yaml").write_text("plugins: [my_plugin.py]\n" + TINY.format(output=tmp_path / "runs"))
    (tmp_path / "extra.py").write_text("")
    child = tmp_path / "child.yaml"
    child.write_text("base: lib/base.yaml\nplugins: [extra.py]\nschedule: {top: 4}\n")
    recipe = load_recipe(child, ["plugins=[json]"])
    assert recipe.plugins == [str(lib / "my_plugin.py"), str(tmp_path / "extra.py"), "json"]
    assert recipe.components["schedule"][1].top == 4.0


def test_module_name_and_command_line_path(tmp_path, monkeypatch):
    package = tmp_path / "pkgs"
    package.mkdir()
    (package / "symmetric_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(package))
    recipe_path = tmp_path / "plain.yaml"
    recipe_path.write_text(TINY.format(output=tmp_path / "runs"))
    recipe = load_recipe(recipe_path, ["plugins=[symmetric_plugin]"])
    assert recipe.plugins == ["symmetric_plugin"]
    assert recipe.registry.get("sampler", "local-ddim").plugin == "local:symmetric_plugin"
    monkeypatch.chdir(package)  # a path on the command line is relative to the working folder
    assert load_recipe(recipe_path, ["plugins=./symmetric_plugin.py"]).plugins == [
        str(package / "symmetric_plugin.py")
    ]


@pytest.mark.parametrize(
    "plugins, fragment",
    [
        ("[missing.py]", "recipe key 'plugins[0]': '{tmp}/missing.py' failed to load as a plugin: FileNotFoundError"),
        (
            "[my_plugin.py, broken.py]",
            "recipe key 'plugins[1]': '{tmp}/broken.py' failed to load as a plugin: "
            "ModuleNotFoundError: No module named 'no_such_dependency'",
        ),
        (
            "[no_such_plugin_module]",
            "recipe key 'plugins[0]': 'no_such_plugin_module' failed to load as a plugin: ModuleNotFoundError",
        ),
        ("[typo.py]", "recipe key 'plugins[0]': '{tmp}/typo.py' failed to load as a plugin: PluginValidationError"),
        (
            "[invalid.py]",
            "recipe key 'plugins[0]': '{tmp}/invalid.py' failed to load as a plugin: plugin "
            "'local:{tmp}/invalid.py' registered a schedule named 'Not A Name'",
        ),
        ("{{a: 1}}", "recipe key 'plugins' in {tmp}/bad.yaml: {{'a': 1}}; expected a list of module names"),
    ],
)
def test_a_plugin_that_fails_stops_with_its_recipe_key(tmp_path, plugins, fragment, capsys):
    (tmp_path / "my_plugin.py").write_text(PLUGIN)
    (tmp_path / "broken.py").write_text("import no_such_dependency\n")
    (tmp_path / "typo.py").write_text(
        "from sandbox import hookimpl\n\n@hookimpl\ndef register_schedule(register):\n    pass\n"
    )
    (tmp_path / "invalid.py").write_text(
        "from sandbox import hookimpl\n\n@hookimpl\ndef register_schedules(register):\n"
        "    register('Not A Name', lambda params: None)\n"
    )
    (tmp_path / "clash.py").write_text(
        "from sandbox import hookimpl\n\n@hookimpl\ndef register_schedules(register):\n"
        "    register('cosine', lambda params: None)\n"
    )
    path = tmp_path / "bad.yaml"
    path.write_text(f"plugins: {plugins.format()}\n" + TINY.format(output=tmp_path / "runs"))
    expected = fragment.format(tmp=tmp_path)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert expected in str(info.value)
    assert cli.main(["show", str(path)]) == 2
    assert expected in " ".join(capsys.readouterr().err.split())


# ---------------------------------------------------------------- broken installed plugins


def _module(name: str, **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    for key, value in hooks.items():
        setattr(module, key, value)
    return module


@hookimpl
def _register_bad_name(register):
    register("Bad Name", lambda params: None)


@hookimpl
def _register_raises(register):
    raise ValueError("the plugin's own bug")


@pytest.mark.parametrize(
    "module, reason",
    [
        (None, "ModuleNotFoundError: No module named 'sandbox_broken_nowhere'"),
        (
            _module("sandbox_broken_nowhere", register_schedules=_register_bad_name),
            "registered a schedule named 'Bad Name'",
        ),
        (_module("sandbox_broken_nowhere", register_schedules=_register_raises), "ValueError: the plugin's own bug"),
    ],
    ids=["import-error", "invalid-registration", "hook-raises"],
)
def test_broken_installed_plugin_is_reported_by_the_cli_and_the_rest_works(module, reason, tiny_recipe, capsys):
    modules = {"sandbox_broken_nowhere": module} if module is not None else {}
    with fake_distribution("sandbox-broken", "0.3", {"broken": "sandbox_broken_nowhere"}, modules):
        assert cli.main(["list"]) == 0
        out, err = capsys.readouterr()
        err = " ".join(err.split())
        assert "sandbox-broken" in err and reason in err
        assert "cosine" in out and "ddim" in out
        assert cli.main(["plugins"]) == 0
        out, err = capsys.readouterr()
        assert "sandbox-broken" in " ".join(err.split()) and "diffusion-sandbox" in out
        assert cli.main(["show", str(tiny_recipe)]) == 0, "a recipe of working components still runs"
        capsys.readouterr()
        assert cli.main(["show", str(tiny_recipe), "schedule.name=broken"]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert "unknown schedule 'broken'" in err and "Plugins that failed to load: sandbox-broken" in err
        assert reason in err
    assert not get_registry().failures, "the fake distribution is gone after the block"
    assert "sandbox_broken_nowhere" not in sys.modules


CLASH = "from sandbox import hookimpl\n\n@hookimpl\ndef register_schedules(register):\n    register('cosine', 'x:y')\n"


def test_a_local_plugin_reusing_a_name_disables_only_that_name(tmp_path, capsys, monkeypatch):
    (tmp_path / "clash.py").write_text(CLASH)
    (tmp_path / "my_plugin.py").write_text(PLUGIN)
    uses = tmp_path / "uses.yaml"
    uses.write_text(
        "plugins: [clash.py, my_plugin.py]\n"
        + TINY.format(output=tmp_path / "runs").replace("{name: symmetric, top: 5}", "{name: cosine}")
    )
    with pytest.raises(DuplicateComponentError) as info:
        load_recipe(uses)
    message = str(info.value)
    assert "recipe key 'schedule.name': two schedules are named 'cosine'" in message
    assert "diffusion-sandbox" in message and "clash.py" in message and "SANDBOX_PREFER" in message
    assert cli.main(["show", str(uses)]) == 2
    assert "two schedules are named 'cosine'" in " ".join(capsys.readouterr().err.split())

    other = tmp_path / "other.yaml"  # the clash does not concern a recipe that never names 'cosine'
    other.write_text("plugins: [clash.py, my_plugin.py]\n" + TINY.format(output=tmp_path / "runs"))
    recipe = load_recipe(other)
    assert recipe.registry.clash("schedule", "cosine") and "cosine" not in recipe.registry.names("schedule")

    monkeypatch.setenv("SANDBOX_PREFER", "clash.py")  # the user asks for the local one explicitly
    preferred = load_recipe(uses)
    assert preferred.registry.get("schedule", "cosine").plugin == f"local:{tmp_path / 'clash.py'}"
