"""Recipe layering (defaults < base < file < command line) and validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.errors import RecipeError, RegistryError
from sandbox.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


BASE = """
dataset: {name: toy2d, shape: moons}
schedule: {name: cosine, s: 0.01}
denoiser: {name: unet, channels: 16, channel_mult: [1, 2], groups: 8}
sampler: {name: ddim, steps: 20}
train: {steps: 300, lr: 1e-3}
"""


def test_precedence_defaults_file_then_command_line(tmp_path):
    # fmt: off
    path = write(tmp_path / "r.yaml", BASE)
    recipe = load_recipe(path, ["train.steps=7", "schedule.s=0.02"])
    assert recipe.train.steps == 7                   # command line beats the file
    assert recipe.train.lr == 1e-3                   # file beats the default
    assert recipe.train.batch_size == 128            # typed default
    assert recipe.components["schedule"] == ("cosine", recipe.components["schedule"][1])
    assert recipe.components["schedule"][1].s == 0.02
    assert recipe.components["schedule"][1].num_steps == 1000  # the component's own default
    assert recipe.name == "r"
    # fmt: on


def test_base_recipe_is_extended_and_a_new_component_name_starts_afresh(tmp_path):
    write(tmp_path / "base.yaml", BASE)
    child = write(tmp_path / "child.yaml", "base: base.yaml\ndenoiser: {name: mlp}\ntrain: {steps: 5}\n")
    recipe = load_recipe(child)
    assert recipe.train.steps == 5 and recipe.train.lr == 1e-3
    name, params = recipe.components["denoiser"]
    assert name == "mlp" and params.hidden == 128  # no UNet keys leaked into the MLP
    assert recipe.components["schedule"][1].s == 0.01
    # the same on the command line
    recipe = load_recipe(tmp_path / "base.yaml", ["denoiser.name=resnet"])
    assert recipe.components["denoiser"][0] == "resnet"


def test_same_component_name_merges_parameters(tmp_path):
    write(tmp_path / "base.yaml", BASE)
    child = write(tmp_path / "child.yaml", "base: base.yaml\ndenoiser: {name: unet, channels: 32}\n")
    params = load_recipe(child).components["denoiser"][1]
    assert params.channels == 32 and params.channel_mult == [1, 2] and params.groups == 8


def test_base_loop_is_reported(tmp_path):
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(RecipeError, match="loop"):
        load_recipe(tmp_path / "a.yaml")


@pytest.mark.parametrize(
    "overrides, key, fragment",
    [
        (["train.stepz=3"], "train.stepz", "Did you mean: 'steps'"),
        (["train.steps=abc"], "train.steps", "abc"),
        (["trian.steps=3"], "trian", "Did you mean: 'train'"),
        (["denoiser.channels=abc"], "denoiser.channels", "abc"),
        (["denoiser.chanels=8"], "denoiser.chanels", "'channels'"),
        (["schedule.s=abc"], "schedule.s", "abc"),
        (["train.target=eps"], "train.target", "Did you mean 'epsilon'"),
        (["run.device=gpu"], "run.device", "'gpu'"),
        (["train.lr=-1"], "train.lr", "-1"),
        (["train.ema_decay=1.5"], "train.ema_decay", "1.5"),
        (["schedule.s=-1"], "schedule.s", "-1.0; expected a number >= 0"),
        (["sampler.steps=0"], "sampler.steps", "0; expected an integer >= 1"),
        (["denoiser.groups=5"], "denoiser.groups", "5; expected a divisor of channels (16)"),
    ],
)
def test_bad_values_name_the_key_and_the_value(tmp_path, overrides, key, fragment):
    path = write(tmp_path / "r.yaml", BASE)
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides)
    message = str(info.value)
    assert f"recipe key '{key}'" in message
    assert fragment in message


def test_unknown_component_name_suggests_the_closest(tmp_path):
    path = write(tmp_path / "r.yaml", BASE)
    with pytest.raises(RegistryError) as info:
        load_recipe(path, ["sampler.name=ddin"])
    assert "recipe key 'sampler.name'" in str(info.value) and "Did you mean 'ddim'?" in str(info.value)


def test_missing_component_section_lists_choices(tmp_path):
    path = write(tmp_path / "r.yaml", "dataset: {name: toy2d}\nschedule: {name: cosine}\nsampler: {name: ddim}\n")
    with pytest.raises(RecipeError, match=r"recipe key 'denoiser': missing.*mlp"):
        load_recipe(path)


def test_malformed_override_and_missing_file(tmp_path):
    path = write(tmp_path / "r.yaml", BASE)
    with pytest.raises(RecipeError, match="expected key=value"):
        load_recipe(path, ["train.steps"])
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")
    bad = write(tmp_path / "bad.yaml", "train: [1, 2\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)


def test_resolved_recipe_round_trips_through_yaml(tmp_path):
    path = write(tmp_path / "r.yaml", BASE)
    recipe = load_recipe(path, ["train.steps=11"])
    saved = write(tmp_path / "saved.yaml", recipe.to_yaml())
    again = load_recipe(saved)
    assert again.to_dict() == recipe.to_dict()


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.glob("*.yaml")))
def test_every_shipped_recipe_validates(recipe):
    loaded = load_recipe(RECIPES / recipe)
    assert set(loaded.components) == {"dataset", "schedule", "denoiser", "sampler"}


def test_ddpm_cifar10_recipe_has_the_papers_35_7m_parameters():
    """Ho et al. (2020), appendix B: the CIFAR-10 model has 35.7M parameters."""
    from sandbox.registry import get_registry

    recipe = load_recipe(RECIPES / "ddpm_cifar10.yaml")
    name, params = recipe.components["denoiser"]
    net = get_registry().get("denoiser", name).build(params, (3, 32, 32))
    count = sum(p.numel() for p in net.parameters())
    assert round(count / 1e6, 1) == 35.7
    assert recipe.train.batch_size == 128 and recipe.train.lr == 2e-4
    assert recipe.components["schedule"][0] == "linear"
