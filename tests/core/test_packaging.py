"""A built wheel holds every package: ``pyproject.toml`` lists each folder of ``sandbox/`` and ``plugins/`` that has an
``__init__.py`` (an editable install finds them anyway, so only this test notices one left out)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_pyproject_lists_every_package():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {name: ROOT / folder for name, folder in config["package-dir"].items()}
    found = {
        ".".join([name, *init.parent.relative_to(folder).parts])
        for name, folder in folders.items()
        for init in folder.rglob("__init__.py")
    }
    assert found == set(config["packages"]), (
        sorted(found - set(config["packages"])),
        sorted(set(config["packages"]) - found),
    )
