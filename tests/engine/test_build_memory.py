"""eval.num_samples is checked against the memory the samples need, before any work."""

from __future__ import annotations

import pytest

from sandbox import cli
from sandbox.engine import build
from sandbox.errors import RecipeError
from sandbox.recipe import load_recipe

GIB = 2**30


def test_samples_that_do_not_fit_in_memory_are_refused_naming_the_key(tiny_recipe, monkeypatch):
    """1e9 samples of a 2-D toy set take 8 GB as float32 (16 GB while they are joined)."""
    monkeypatch.setattr(build, "available_memory", lambda: 4 * GIB)
    recipe = load_recipe(str(tiny_recipe), ["eval.num_samples=1000000000"])
    with pytest.raises(RecipeError) as info:
        build.build_parts(recipe)
    message = str(info.value)
    assert message.startswith("recipe key 'eval.num_samples': 1000000000; expected")
    assert "GB" in message and "available" in message


def test_samples_that_fit_are_accepted_and_unknown_memory_checks_nothing(tiny_recipe, monkeypatch):
    recipe = load_recipe(str(tiny_recipe), ["eval.num_samples=100000"])
    monkeypatch.setattr(build, "available_memory", lambda: 4 * GIB)
    build.build_parts(recipe)
    monkeypatch.setattr(build, "available_memory", lambda: None)
    build.build_parts(load_recipe(str(tiny_recipe), ["eval.num_samples=1000000000"]))


def test_available_memory_is_read_from_the_system():
    memory = build.available_memory()
    assert memory is None or memory > 64 * 2**20


def test_the_run_stops_before_any_work(tiny_recipe, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(build, "available_memory", lambda: 4 * GIB)
    assert cli.main(["run", str(tiny_recipe), "eval.num_samples=1000000000"]) == 2
    assert "eval.num_samples" in capsys.readouterr().err
    assert not list((tmp_path / "runs").glob("*/checkpoints/*.pt"))
