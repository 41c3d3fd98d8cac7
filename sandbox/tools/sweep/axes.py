"""A sweep's axes: the recipe's ``matrix:`` mapping and ``--axis key=v1,v2``, each a recipe key and its values."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sandbox.engine.sweepdir import parse_value, split_list
from sandbox.errors import RecipeError


@dataclass
class Axis:
    """One axis of the matrix: a recipe key and the values it takes."""

    # fmt: off
    key: str
    values: list[Any]
    labels: list[str]
    source: str = "recipe"              # "recipe" or "command line"
    # fmt: on


def parse_axis(text: str) -> Axis:
    """``--axis key=v1,v2,...`` (values parsed like dot-list values)."""
    example = "expected key=v1,v2,..., for example --axis schedule.name=linear,cosine"
    key, sep, values = text.partition("=")
    key = key.strip()
    if not sep or not key or not values.strip():
        raise RecipeError(f"axis '{text}': {example}")
    try:
        items = split_list(values)
        if "" in items:
            raise ValueError("an empty value")
        parsed = [parse_value(item) for item in items]
    except ValueError as exc:
        raise RecipeError(f"axis '{text}': {exc}; {example}") from exc
    return _axis(key, parsed, "command line")


def _axis(key: str, values: list[Any], source: str) -> Axis:
    if not values:
        raise RecipeError(f"matrix axis '{key}': no values; expected a list of one or more values")
    return Axis(key=key, values=values, labels=value_labels(values), source=source)


def matrix_axes(matrix: Any, prefix: str = "") -> list[Axis]:
    """The axes of a ``matrix:`` mapping; nested mappings are read as dotted keys."""
    if matrix is None:
        return []
    if not isinstance(matrix, dict):
        raise RecipeError(
            f"recipe key 'matrix{'.' + prefix.rstrip('.') if prefix else ''}': {matrix!r}; "
            "expected a mapping of recipe keys to lists of values"
        )
    axes = []
    for key, values in matrix.items():
        dotted = f"{prefix}{key}"
        if isinstance(values, dict):
            axes.extend(matrix_axes(values, f"{dotted}."))
        elif isinstance(values, list):
            axes.append(_axis(dotted, values, "recipe"))
        else:
            raise RecipeError(f"recipe key 'matrix.{dotted}': {values!r}; expected a list of values")
    return axes


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def merge_axes(recipe_axes: list[Axis], cli_axes: list[Axis]) -> list[Axis]:
    """Command-line axes replace recipe axes on the same key (or a section containing it, or inside it)."""
    out = list(recipe_axes)
    for axis in cli_axes:
        clash = [i for i, old in enumerate(out) if _overlaps(old.key, axis.key)]
        if clash:
            out[clash[0]] = axis
            out = [old for i, old in enumerate(out) if i not in clash[1:]]
        else:
            out.append(axis)
    return out


def _compact(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return ",".join(f"{k}={_compact(v)}" for k, v in value.items())
    return json.dumps(value)


def value_labels(values: list[Any]) -> list[str]:
    """Readable labels: a section's ``name`` where that tells the values apart, else the value itself."""
    labels = [v["name"] if isinstance(v, dict) and isinstance(v.get("name"), str) else _compact(v) for v in values]
    repeated = {label for label in labels if labels.count(label) > 1}
    for i, label in enumerate(labels):
        if label in repeated and isinstance(values[i], dict):
            rest = {k: v for k, v in values[i].items() if k != "name"}
            labels[i] = f"{label}({_compact(rest)})" if "name" in values[i] else _compact(values[i])
    if len(set(labels)) < len(labels):
        raise RecipeError(f"matrix axis: the values {labels} repeat; give each value once")
    return labels


def override(key: str, value: Any) -> str:
    """A dot-list override that reads back as ``value`` (JSON is valid YAML)."""
    return f"{key}={json.dumps(value)}"
