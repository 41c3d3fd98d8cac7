"""``sandbox show``: print the fully resolved recipe without running it (never imports torch)."""

from __future__ import annotations

import argparse

NAME = "show"
HELP = "print the fully resolved recipe without running it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="path of a YAML recipe")
    parser.add_argument("overrides", nargs="*", metavar="key=value")


def run(args: argparse.Namespace) -> int:
    from rich.syntax import Syntax

    from sandbox.console import console
    from sandbox.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    console.print(Syntax(recipe.to_yaml(), "yaml", background_color="default"))
    return 0
