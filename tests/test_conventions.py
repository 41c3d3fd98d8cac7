"""Habits from other tools: Hydra's ``+key=value`` and ``~key`` on the command line; ``sandbox summary`` over any
set of run folders and sweeps."""

from __future__ import annotations

import pytest

from sandbox import cli
from sandbox.errors import RecipeError
from sandbox.recipe import load_recipe


@pytest.fixture
def based(tiny_recipe):
    """A recipe that sets train.lr and train.steps over the tiny recipe."""
    path = tiny_recipe.parent / "based.yaml"
    path.write_text("base: tiny.yaml\ntrain: {steps: 7, lr: 0.001}\n")
    return path


def test_plus_adds_like_a_plain_override(based):
    assert load_recipe(based, ["+train.steps=5"]).train.steps == 5
    assert load_recipe(based, ["++train.steps=6"]).train.steps == 6
    assert load_recipe(based, ["+denoiser.hidden=8"]).components["denoiser"][1].hidden == 8


def test_tilde_deletes_a_key_so_it_takes_its_default(based):
    assert load_recipe(based, ["~train.steps"]).train.steps == 1000  # the typed default, not the base's 30
    assert load_recipe(based, ["~train.lr=0.001"]).train.lr == 2e-4
    assert load_recipe(based, ["train.steps=3", "~train.steps"]).train.steps == 1000  # in order, as Hydra
    assert load_recipe(based, ["~train.steps", "train.steps=9"]).train.steps == 9
    assert load_recipe(based, ["~denoiser.hidden"]).components["denoiser"][1].hidden != 32  # the mlp's default


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("~train.stesp", "override '~train.stesp': the recipe does not set 'train.stesp', so there is nothing"),
        ("~train.lr=0.002", "override '~train.lr=0.002': 'train.lr' is 0.001 in the recipe, not 0.002"),
    ],
)
def test_tilde_on_a_key_the_recipe_does_not_set_says_so(based, override, expected):
    with pytest.raises(RecipeError) as info:
        load_recipe(based, [override])
    assert expected in str(info.value)


def test_the_command_line_takes_hydra_spellings_after_options(based, capsys):
    assert cli.main(["show", str(based), "~train.steps", "+train.lr=0.003"]) == 0
    out = capsys.readouterr().out
    assert "steps: 1000" in out and "lr: 0.003" in out
    assert cli.main(["show", str(based), "~train.nope"]) == 2
    assert "nothing to delete" in capsys.readouterr().err
