"""A run folder is data, not code: what loading one may import, what its saved files hold, what errors echo.

A run folder's ``plugins:`` may load only installed modules, plugins this process already loaded from a
recipe the user named, and what the user names with ``--plugin``; anything else is refused (exit 2) before it
is imported. Interpolations are saved as written, so ``${oc.env:VAR}`` never copies a secret into the run
folder. An error about a file that is not a recipe names the file, never its contents.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from sandbox import cli, plugins
from sandbox.errors import RecipeError
from sandbox.recipe import load_recipe

VOUCHED = '''
"""A local plugin with no components: it counts its imports in the file beside it."""

from pathlib import Path

with open(Path(__file__).with_name("imports.log"), "a") as log:
    log.write("imported\\n")
'''

EVIL = """
from pathlib import Path

Path(__file__).with_name("RAN").write_text("code from a run folder ran")
"""

TINY = """
plugins: [vouched.py]
dataset: {{name: toy2d, shape: moons, n_train: 256, n_val: 64}}
schedule: {{name: linear, num_steps: 100}}
denoiser: {{name: mlp, hidden: 16, layers: 2}}
sampler: {{name: ddim, steps: 4}}
train: {{steps: 10, batch_size: 32, log_every: 5, val_every: 0, sample_every: 0, warmup_steps: 2}}
eval: {{val_batches: 1, num_samples: 8, sample_batch: 8, grid_samples: 8}}
run: {{device: cpu, seed: 0, output: {output}}}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished 10-step run whose recipe names the local plugin ``vouched.py`` (outside the run folder)."""
    from sandbox.engine.run import run_recipe

    root = tmp_path_factory.mktemp("trust")
    (root / "vouched.py").write_text(VOUCHED)
    path = root / "tiny.yaml"
    path.write_text(TINY.format(output=root / "runs"))
    return Path(run_recipe(load_recipe(path)))


def imports(trained: Path) -> int:
    log = trained.parent.parent / "imports.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.fixture
def fresh(monkeypatch):
    """A process that has loaded no local plugin yet, as ``sandbox sample`` starts."""
    monkeypatch.setattr(plugins, "_LOCAL_MODULES", {})
    monkeypatch.setattr(plugins, "_LOCAL_NAMES", set(), raising=False)


def planted(trained: Path, tmp_path: Path, spec: str = "evil.py") -> Path:
    """A copy of the run whose recipe.yaml names a plugin file shipped inside the folder."""
    run = tmp_path / "shared-run"
    shutil.copytree(trained, run)
    (run / "evil.py").write_text(EVIL)
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["plugins"] = [spec]
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return run


def commands(run: Path, out: Path) -> dict[str, list[str]]:
    return {
        "sample": ["sample", str(run), "--num", "4"],
        "export": ["export", str(run), str(out)],
        "tune-steps": ["tune-steps", str(run), "--nfe", "3", "--batch", "4", "--iterations", "2"],
        "doctor": ["doctor", str(run), "--nfe", "3", "--samples", "4", "--sampler", "ddim", "--grid", "schedule"],
        "resume": ["run", "--resume", str(run), "train.steps=12"],
    }


# ------------------------------------------------------------------------------------------------ plugins


@pytest.mark.slow
@pytest.mark.parametrize("command", ["sample", "export", "tune-steps", "doctor", "resume"])
def test_a_run_folder_plugin_file_is_refused_before_it_is_imported(command, trained, tmp_path, fresh, capsys):
    run = planted(trained, tmp_path)
    assert cli.main(commands(run, tmp_path / "out")[command]) == 2
    err = capsys.readouterr().err
    assert str(run / "evil.py") in err and "--plugin" in err, err
    assert not (run / "RAN").exists()
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("command", ["sample", "export", "tune-steps", "doctor", "resume"])
def test_a_plugin_named_with_the_option_loads(command, trained, tmp_path, fresh, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = imports(trained)
    vouched = trained.parent.parent / "vouched.py"
    args = commands(run, tmp_path / "out")[command]
    code, err = cli.main([*args, "--plugin", str(vouched)]), capsys.readouterr().err
    if command == "export":  # loaded, then stopped further on: the tiny run's mlp has no diffusers exporter
        assert code == 2 and "has no diffusers exporter" in err, err
    else:
        assert code in ((0, 1) if command == "doctor" else (0,)), err  # doctor: 1 if a combination failed
    assert imports(trained) == before + 1
    without = tmp_path / "again"
    shutil.copytree(trained, without)
    plugins._LOCAL_MODULES.clear()
    assert cli.main(commands(without, tmp_path / "out2")[command]) == 2
    assert str(vouched) in capsys.readouterr().err
    assert imports(trained) == before + 1


def test_load_recipe_refuses_a_local_file_unless_trusted(tiny_recipe, tmp_path, fresh):
    run = tmp_path / "shared-run"
    run.mkdir()
    (run / "evil.py").write_text(EVIL)
    recipe = yaml.safe_load(tiny_recipe.read_text())
    recipe["plugins"] = ["./evil.py"]
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError, match=r"plugins\[0\].*evil\.py.*--plugin") as info:
        load_recipe(run / "recipe.yaml", trusted=())
    assert str(run / "evil.py") in str(info.value)
    assert not (run / "RAN").exists()
    with pytest.raises(RecipeError, match="--plugin"):
        load_recipe(run / "recipe.yaml", ["train.steps=3"], trusted=[str(tmp_path / "other.py")])
    assert not (run / "RAN").exists()
    assert load_recipe(run / "recipe.yaml", trusted=[str(run / "evil.py")]).plugins == [str(run / "evil.py")]
    assert (run / "RAN").exists()


def test_a_module_that_is_not_installed_is_refused_an_installed_one_loads(tmp_path, tiny_recipe, fresh, monkeypatch):
    (tmp_path / "trust_not_installed.py").write_text(EVIL)
    monkeypatch.syspath_prepend(str(tmp_path))  # importable, but from a plain folder, not installed
    recipe = yaml.safe_load(tiny_recipe.read_text())
    recipe["plugins"] = ["trust_not_installed"]
    tiny_recipe.write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError, match=r"'trust_not_installed' is not an installed module.*--plugin"):
        load_recipe(tiny_recipe, trusted=())
    assert not (tmp_path / "RAN").exists()
    recipe["plugins"] = ["yaml"]  # installed from a distribution: it may load
    tiny_recipe.write_text(yaml.safe_dump(recipe))
    assert load_recipe(tiny_recipe, trusted=()).plugins == ["yaml"]


def test_a_recipe_named_on_the_command_line_still_loads_its_plugin_files(tmp_path, tiny_recipe, fresh):
    (tmp_path / "evil.py").write_text(EVIL)
    recipe = yaml.safe_load(tiny_recipe.read_text())
    recipe["plugins"] = ["./evil.py"]
    tiny_recipe.write_text(yaml.safe_dump(recipe))
    assert load_recipe(tiny_recipe).plugins == [str(tmp_path / "evil.py")]
    assert (tmp_path / "RAN").exists()


# ------------------------------------------------------------------------------------------------ secrets


@pytest.fixture
def secret_lr(tiny_recipe, monkeypatch) -> Path:
    """The tiny recipe with ``train.lr: ${oc.env:SANDBOX_TEST_SECRET_LR}``, the variable set."""
    monkeypatch.setenv("SANDBOX_TEST_SECRET_LR", "0.000123457")
    recipe = yaml.safe_load(tiny_recipe.read_text())
    recipe["train"]["lr"] = "${oc.env:SANDBOX_TEST_SECRET_LR}"
    tiny_recipe.write_text(yaml.safe_dump(recipe))
    return tiny_recipe


def test_environment_interpolations_are_saved_unresolved(secret_lr):
    loaded = load_recipe(secret_lr, ["train.steps=10"])
    assert loaded.train.lr == pytest.approx(0.000123457)  # used resolved
    assert "0.000123457" not in loaded.to_yaml()
    assert loaded.to_dict()["train"]["lr"] == "${oc.env:SANDBOX_TEST_SECRET_LR}"


@pytest.mark.slow
def test_a_run_saves_environment_interpolations_unresolved(secret_lr):
    import torch
    from safetensors import safe_open

    from sandbox.engine.run import run_recipe

    loaded = load_recipe(secret_lr, ["train.steps=10"])
    run = Path(run_recipe(loaded))
    saved = (run / "recipe.yaml").read_text()
    assert "${oc.env:SANDBOX_TEST_SECRET_LR}" in saved and "0.000123457" not in saved
    state = torch.load(run / "checkpoints" / "final.pt", weights_only=True)
    assert state["recipe"]["train"]["lr"] == "${oc.env:SANDBOX_TEST_SECRET_LR}"
    with safe_open(str(run / "ema.safetensors"), "pt") as handle:
        assert "0.000123457" not in handle.metadata()["recipe"]
    again = load_recipe(run / "recipe.yaml", trusted=())
    assert again.train.lr == pytest.approx(0.000123457)
    assert again.to_dict() == loaded.to_dict()


@pytest.mark.slow
def test_a_runs_summary_keeps_a_components_interpolation_unresolved(tiny_recipe, monkeypatch):
    from sandbox.engine.run import run_recipe

    monkeypatch.setenv("SANDBOX_TEST_SECRET_HIDDEN", "29")
    recipe = yaml.safe_load(tiny_recipe.read_text())
    recipe["denoiser"]["hidden"] = "${oc.env:SANDBOX_TEST_SECRET_HIDDEN}"
    tiny_recipe.write_text(yaml.safe_dump(recipe))
    run = Path(run_recipe(load_recipe(tiny_recipe, ["train.steps=10", "train.sample_every=0"])))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["components"]["denoiser"]["params"]["hidden"] == "${oc.env:SANDBOX_TEST_SECRET_HIDDEN}"


def test_an_interpolation_overridden_on_the_command_line_is_saved_as_given(secret_lr):
    assert load_recipe(secret_lr, ["train.lr=0.01"]).to_dict()["train"]["lr"] == 0.01


@pytest.mark.parametrize(
    "contents",
    [
        "machine example.com login me password sk-secret-1",
        "API_KEY=sk-secret-1",
        '{"token": "sk-secret-1", "user": "me"}',
        "[section]\nkey = sk-secret-1\n",
        "train: sk-secret-1\n",
        "- sk-secret-1\n",
    ],
)
def test_a_base_that_is_not_a_recipe_is_named_never_echoed(tmp_path, contents, capsys):
    (tmp_path / "credentials").write_text(contents)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("base: credentials\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe)
    assert "sk-secret-1" not in str(info.value) and "token" not in str(info.value)
    assert str(tmp_path / "credentials") in str(info.value) or "recipe key 'train'" in str(info.value)
    assert cli.main(["show", str(recipe)]) == 2
    out = capsys.readouterr()
    assert "sk-secret-1" not in out.err + out.out


# ------------------------------------------------------------------------------------------------ overrides


@pytest.mark.parametrize("override", ["train.steps=[1,", "train.steps={a:", "eval.metrics=[fid"])
def test_an_override_with_broken_syntax_is_one_message(override, capsys):
    assert cli.main(["show", str(Path(__file__).parents[2] / "recipes" / "quickstart.yaml"), override]) == 2
    err = capsys.readouterr().err
    assert f"override '{override}'" in err and "Traceback" not in err, err
