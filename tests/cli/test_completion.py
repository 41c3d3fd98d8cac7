"""Shell completion: the bash and zsh scripts cover every command and option, recipe arguments complete YAML
files, and component names complete from ``sandbox list --names KIND`` without importing torch."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys

import pytest

from sandbox import cli
from sandbox.cli.completion import SHELLS, attach, script


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("shell", SHELLS)
def test_script_names_every_command_and_option(shell, capsys):
    assert cli.main(["completion", shell]) == 0
    text = capsys.readouterr().out
    commands = subcommands(cli._parser())
    assert {"run", "sweep", "summary", "list", "completion"} <= set(commands)
    for name, sub in commands.items():
        assert name in text, name
        for action in sub._actions:
            for option in action.option_strings:
                assert option in text, f"{name} {option}"
    assert "_sandbox_override" in text and "_sandbox_recipe_file" in text


def test_recipe_arguments_complete_yaml_files():
    parser = attach(cli._parser())
    recipes = {
        name: action.complete  # type: ignore[attr-defined]
        for name, sub in subcommands(parser).items()
        for action in sub._actions
        if action.dest == "recipe"
    }
    assert set(recipes) == {"run", "show", "sweep"}
    assert all(
        complete == {"bash": "_sandbox_recipe_file", "zsh": "_sandbox_recipe_file"} for complete in recipes.values()
    )
    bash, zsh = script(cli._parser(), "bash"), script(cli._parser(), "zsh")
    for command in recipes:
        assert f"_shtab_sandbox_{command}_pos_0_COMPGEN=_sandbox_recipe_file" in bash
    assert ":path of a YAML recipe:_sandbox_recipe_file" in zsh
    assert "_files -g '*.(yaml|yml)'" in zsh
    assert '"*::key\\=value:_sandbox_override"' in zsh  # every override completes, not only the first
    assert "(*)::" not in zsh


def test_component_names_without_torch():
    code = (
        "import sys; from sandbox import cli; rc = cli.main(['list', '--names', 'sampler']); "
        "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    names = result.stdout.split()
    assert {"ddim", "ddpm"} <= set(names)
    assert names == sorted(names) and all(" " not in name for name in names)


def test_unknown_kind_is_refused(capsys):
    assert cli.main(["list", "--names", "samplers"]) == 1
    err = capsys.readouterr().err
    assert "--names samplers" in err and "sampler" in err


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completes_through_the_generated_script(tmp_path):
    """bash's own completion function on the generated script, with the words split as bash splits them
    (COMP_WORDBREAKS holds '=', so ``sampler.name=dd`` is three words)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    launcher = bindir / "sandbox"
    launcher.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m sandbox "$@"\n')
    launcher.chmod(0o755)
    (bindir / "completion.bash").write_text(script(cli._parser(), "bash"))
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "quick.yaml").write_text("{}\n")
    (tmp_path / "recipes" / "quick.txt").write_text("")

    def complete(line: str) -> list[str]:
        words = line.replace("=", " = ").split() + ([""] if line.endswith((" ", "=")) else [])
        snippet = (
            f"source {shlex.quote(str(bindir / 'completion.bash'))}\n"
            f"COMP_LINE={shlex.quote(line)}; COMP_POINT=${{#COMP_LINE}}\n"
            f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
            '_shtab_sandbox sandbox; printf "%s\\n" "${COMPREPLY[@]}"\n'
        )
        env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
        result = subprocess.run(
            ["bash", "-c", snippet], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60
        )
        assert result.returncode == 0, result.stderr
        return [word for word in result.stdout.splitlines() if word]

    assert complete("sandbox su") == ["summary"]
    assert set(complete("sandbox ")) >= {"run", "sweep", "completion", "list"}
    assert "--resume" in complete("sandbox run --")
    assert complete("sandbox run recipes/q") == ["recipes/quick.yaml"]
    dd = complete("sandbox run recipes/quick.yaml sampler.name=dd")
    assert {"ddim", "ddpm"} <= set(dd) and all(name.startswith("dd") for name in dd)
    assert "cosine" in complete("sandbox sample runs/x schedule.name=")
    assert complete("sandbox run recipes/quick.yaml train.steps=2") == []  # not a component key
