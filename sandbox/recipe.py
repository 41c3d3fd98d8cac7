"""Recipes: typed defaults, then the YAML file (and the files it builds on), then the command line.

A recipe has one section per component, ``{name: ..., <its parameters>}``,
and typed sections ``train``, ``eval`` and ``run``. ``base: other.yaml``
names a recipe (relative to this file) to extend. When a layer changes a
component's ``name``, that section starts afresh from the layer's keys, so
``denoiser.name=resnet`` does not inherit the UNet's parameters.
Everything is validated before any work starts.

An optional ``launcher: {name: submitit, ...}`` section holds the resources
of each cell's job when ``sandbox sweep --launcher`` submits a sweep; it is
validated against the named launcher's parameters like a component section,
and does not change what a run computes (nor a sweep cell's identity).

``plugins: [my_module, ./my_plugin.py]`` names local plugin modules, by
module name or by path (relative to the recipe file that names it; on the
command line, to the working folder). They are loaded before the components
are validated; the lists of base recipes, the file and the overrides add up.
The resolved recipe keeps the list with absolute paths, and carries the
registry it was validated against (``Recipe.registry``, not serialised), so a
run builds its parts from the same plugins. A run folder's recipe is data, not
code: loaded with ``trusted`` (the modules and files the user named with
``--plugin``), its local plugins load only when installed, already loaded by
this process or trusted; any other is refused before anything is imported.

The saved form (:meth:`Recipe.to_dict`, written as ``recipe.yaml``, into
checkpoints and ``ema.safetensors``) keeps every ``${...}`` interpolation as
written, so ``${oc.env:API_KEY}`` never copies a secret into a run folder; it
is resolved again wherever the recipe is loaded.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sandbox.errors import ParameterError, RecipeError
from sandbox.plugins import LOCAL_PREFIX, plugin_specs, refuse_untrusted
from sandbox.registry import KINDS, Registry
from sandbox.sections import EvalConfig, RunConfig, TrainConfig

RECIPE_KEYS = ("name", "base", "plugins", *KINDS, "guidance", "launcher", "matrix", "train", "eval", "run")


@dataclass
class RecipeSchema:
    name: str = ""  # run name; defaults to the recipe file's stem
    dataset: Any = None
    schedule: Any = None
    denoiser: Any = None
    sampler: Any = None
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)


@dataclass
class Recipe:
    """A validated recipe: typed sections plus each component's name and typed parameters."""

    name: str
    components: dict[str, tuple[str, Any]]  # kind -> (name, params dataclass instance)
    train: TrainConfig
    eval: EvalConfig
    run: RunConfig
    source: Optional[str] = None
    plugins: list[str] = field(default_factory=list)  # local plugin modules: names or absolute paths
    loggers: list[tuple[str, Any]] = field(default_factory=list)  # run.loggers: (name, params dataclass or None)
    registry: Optional[Registry] = field(default=None, repr=False, compare=False)  # what validated it
    launcher: Optional[tuple[str, Any]] = None  # the optional launcher: section, (name, params)
    guidance: Optional[tuple[str, Any]] = None  # the optional guidance: section, (name, params)
    # key path -> the ${...} interpolation written there, saved in its place (an environment secret stays out)
    interpolations: dict[tuple[Any, ...], str] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The saved form: the resolved recipe, with every interpolation as written (never its value)."""
        out = self._resolved_dict()
        for keys, written in self.interpolations.items():
            node: Any = out
            for key in keys[:-1]:
                node = node[key] if _has(node, key) else None
            if _has(node, keys[-1]):
                node[keys[-1]] = written
        return out

    def _resolved_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "plugins": list(self.plugins)}
        for kind in KINDS:
            name, params = self.components[kind]
            out[kind] = {"name": name, **(dataclasses.asdict(params) if params is not None else {})}
        out["train"] = dataclasses.asdict(self.train)
        out["eval"] = dataclasses.asdict(self.eval)
        out["run"] = dataclasses.asdict(self.run)
        out["run"]["loggers"] = [
            {"name": name, **dataclasses.asdict(params)} if params is not None else name
            for name, params in self.loggers
        ]
        if self.guidance is not None:
            name, params = self.guidance
            out["guidance"] = {"name": name, **(dataclasses.asdict(params) if params is not None else {})}
        if self.launcher is not None:
            name, params = self.launcher
            out["launcher"] = {"name": name, **(dataclasses.asdict(params) if params is not None else {})}
        return out

    def to_yaml(self) -> str:
        return OmegaConf.to_yaml(OmegaConf.create(self.to_dict()))


def _has(node: Any, key: Any) -> bool:
    if isinstance(node, dict):
        return key in node
    return isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node)


def _interpolations(node: Any, keys: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], str]:
    """Every string holding a ``${...}`` interpolation in the merged recipe ``node``, by key path."""
    if isinstance(node, str):
        return {keys: node} if "${" in node else {}
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    found: dict[tuple[Any, ...], str] = {}
    for key, value in items:
        found.update(_interpolations(value, (*keys, key)))
    return found


def _merge_layer(acc: dict, layer: dict) -> dict:
    """Merge ``layer`` over ``acc``; a component whose name changes starts afresh."""
    out = copy.deepcopy(acc)
    for key, value in layer.items():
        if key == "plugins" and isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = out[key] + [spec for spec in value if spec not in out[key]]  # lists add up
            continue
        if (
            key in (*KINDS, "guidance", "launcher")
            and isinstance(value, dict)
            and isinstance(out.get(key), dict)
            and "name" in value
            and value["name"] != out[key].get("name")
        ):
            out[key] = copy.deepcopy(value)
            continue
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge_layer(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _load_file(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in chain:
        loop = " -> ".join(str(p) for p in (*chain, path))
        raise RecipeError(f"recipe key 'base': recipes extend each other in a loop: {loop}")
    if not path.is_file():
        where = f"recipe key 'base' in {chain[-1]}: " if chain else ""
        raise RecipeError(f"{where}recipe file '{path}' does not exist")
    try:
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as exc:  # yaml or OmegaConf parse error
        raise RecipeError(f"recipe file '{path}' is not valid YAML: {_where(exc)}") from exc
    if data is None:
        data = {}
    # Never echo a file that is not a recipe (a base: pointing at credentials): name it and what was expected.
    if not isinstance(data, dict) or (data and not any(key in RECIPE_KEYS for key in data)):
        what = f"a {type(data).__name__}" if not isinstance(data, dict) else "a mapping with none of them"
        raise RecipeError(
            f"recipe file '{path}' is not a recipe: expected a mapping of recipe sections "
            f"({', '.join(RECIPE_KEYS)}), found {what}"
        )
    if "plugins" in data:
        data["plugins"] = plugin_specs(data["plugins"], path.parent, f" in {path}")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise RecipeError(f"recipe key 'base': {base!r} in {path}; expected the path of a recipe file")
    return _merge_layer(_load_file(path.parent / base, (*chain, path)), data)


def _where(exc: Exception, position: bool = True) -> str:
    """What a YAML error found (and where), without the file's text (no snippet of the line)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem} at line {mark.line + 1}, column {mark.column + 1}" if position else str(exc.problem)
    if isinstance(exc, UnicodeDecodeError):
        return "it is not UTF-8 text"
    return type(exc).__name__


def _local_registry(specs: list[str], registry: Registry | None) -> Registry:
    """The registry plus the recipe's local plugins; a plugin that fails stops with its recipe key."""
    from sandbox.registry import get_registry, with_local

    base = registry if registry is not None else get_registry()
    if not specs:
        return base
    extended = with_local(base, specs)
    for i, spec in enumerate(specs):
        for failure in extended.failures:
            if failure.distribution == LOCAL_PREFIX + spec:
                raise RecipeError(f"recipe key 'plugins[{i}]': {spec!r} failed to load as a plugin: {failure.reason}")
    return extended


def _parse_overrides(overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise RecipeError(f"override '{item}': expected key=value, for example train.steps=200")
        try:
            OmegaConf.from_dotlist([item])
        except Exception as exc:  # OmegaConf's grammar, or YAML parsing the value
            detail = _where(exc, position=False) if isinstance(exc, yaml.YAMLError) else str(exc).splitlines()[0]
            raise RecipeError(
                f"override '{item}': cannot read the value ({detail}); quote it or fix its brackets"
            ) from exc
    try:
        parsed = OmegaConf.to_container(OmegaConf.from_dotlist(list(overrides)), resolve=False)
    except OmegaConfBaseException as exc:
        raise RecipeError(f"overrides {' '.join(overrides)}: {str(exc).splitlines()[0]}") from exc
    return {str(k): v for k, v in parsed.items()} if isinstance(parsed, dict) else {}


def _apply_overrides(data: dict, overrides: list[str]) -> dict:
    """The command line over the recipe, in order, with Hydra's spellings: ``key=value``; ``+key=value`` and
    ``++key=value`` alike (every key a section accepts already has its typed default, so adding is setting);
    ``~key`` deletes a key the recipe sets, so it takes its default again (``~key=value``: only if it is ``value``)."""
    sets: list[str] = []
    for item in overrides:
        if item.startswith("~"):
            data, sets = _set(data, sets), []
            data = _delete(data, item)
        else:
            sets.append(item[2:] if item.startswith("++") else item[1:] if item.startswith("+") else item)
    return _set(data, sets)


def _set(data: dict, overrides: list[str]) -> dict:
    """``data`` with the ``key=value`` overrides merged over it."""
    if not overrides:
        return data
    layer = _parse_overrides(overrides)
    if "plugins" in layer:
        layer["plugins"] = plugin_specs(layer["plugins"], Path.cwd(), " on the command line")
    return _merge_layer(data, layer)


def _delete(data: dict, item: str) -> dict:
    """``data`` without the dotted key of the override ``~key`` or ``~key=value``."""
    key, sep, value = item[1:].partition("=")
    *parents, last = key.split(".")
    out = copy.deepcopy(data)
    node: Any = out
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if not key or not isinstance(node, dict) or last not in node:
        raise RecipeError(
            f"override '{item}': the recipe does not set '{key}', so there is nothing to delete (~key removes a "
            "key the recipe or its base sets, which then takes its default; key=value sets one)"
        )
    if sep:
        expected = _parse_overrides([f"value={value}"])["value"]
        if node[last] != expected:
            raise RecipeError(f"override '{item}': '{key}' is {node[last]!r} in the recipe, not {expected!r}")
    del node[last]
    return out


def _explain(exc: OmegaConfBaseException, prefix: str = "") -> RecipeError:
    key = prefix + (str(exc.full_key) if getattr(exc, "full_key", None) else "")
    message = str(getattr(exc, "msg", exc)).splitlines()[0]
    return RecipeError(f"recipe key '{key}': {message}")


def _typed(schema: type, values: Any, section: str, owner: str = "") -> Any:
    """``values`` over the dataclass ``schema``'s defaults, typed and range-checked by the dataclass itself."""
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values))
    except OmegaConfBaseException as exc:
        error = _explain(exc, prefix=f"{section}." if section else "")
        raise RecipeError(f"{error}{owner}") from exc
    except ParameterError as exc:
        raise RecipeError(exc.in_section(section) + owner) from exc


def _component(registry: Registry, kind: str, section: Any, key: str = ""):
    """``(name, typed parameters)`` of the recipe section ``key`` (default: ``kind``) naming a ``kind``."""
    key = key or kind
    if section is None:
        raise RecipeError(
            f"recipe key '{kind}': missing; expected a section like {{name: ...}} "
            f"naming one of: {', '.join(registry.names(kind)) or 'none registered'}"
        )
    if isinstance(section, str):
        section = {"name": section}
    if not isinstance(section, dict):
        raise RecipeError(f"recipe key '{key}': {section!r}; expected a mapping with a 'name' key")
    section = dict(section)
    name = section.pop("name", None)
    if not isinstance(name, str):
        raise RecipeError(f"recipe key '{key}.name': {name!r}; expected one of: {', '.join(registry.names(kind))}")
    component = registry.get(kind, name, key=f"{key}.name" if key == kind else key)
    if component.params is None:
        if section:
            raise RecipeError(f"recipe key '{key}.{next(iter(section))}': {kind} '{name}' takes no parameters")
        return name, None
    return name, _typed(component.params, section, key, f" (parameters of {kind} '{name}' from {component.provider})")


def load_recipe(
    path: str | Path | None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    registry: Registry | None = None,
    trusted: Optional[Iterable[str]] = None,
) -> Recipe:
    """Resolve and validate a recipe: defaults < base recipes < the file < overrides.

    ``registry`` defaults to the installed plugins'; the recipe's local
    ``plugins`` extend a copy of it before any component is validated.
    ``trusted`` None: the user named this recipe, so its local plugins load.
    Otherwise (a run folder's recipe) only the local plugins that are
    installed, already loaded by this process or in ``trusted`` (module names
    and file paths the user named) may load; any other is refused first.
    """
    data = _load_file(Path(path)) if path is not None else {}
    data = _apply_overrides(data, list(overrides))
    plugins = data.pop("plugins", None) or []
    if trusted is not None:
        refuse_untrusted(plugins, trusted, str(path) if path is not None else "the command line")
    interpolations = _interpolations(data)
    registry = _local_registry(plugins, registry)
    data.pop("matrix", None)  # sweep axes, read by sandbox.tools.sweep; one run is the recipe without them
    components = {kind: data.pop(kind, None) for kind in KINDS}
    launcher = data.pop("launcher", None)
    guidance = data.pop("guidance", None)
    sections = {key: data.pop(key, None) or {} for key in ("train", "eval", "run")}
    for key, section in sections.items():
        if not isinstance(section, dict):
            raise RecipeError(f"recipe key '{key}': expected a mapping of its keys, not a {type(section).__name__}")
    if isinstance(sections["run"], dict) and isinstance(sections["run"].get("loggers"), (str, dict)):
        sections["run"]["loggers"] = [sections["run"]["loggers"]]  # run.loggers=tensorboard: a list of one
    typed: RecipeSchema = _typed(RecipeSchema, data, "")
    typed.train, typed.eval, typed.run = (
        _typed(schema, sections[key], key)
        for key, schema in (("train", TrainConfig), ("eval", EvalConfig), ("run", RunConfig))
    )
    resolved = {kind: _component(registry, kind, components[kind]) for kind in KINDS}
    loggers = [_component(registry, "logger", entry, f"run.loggers[{i}]") for i, entry in enumerate(typed.run.loggers)]
    launcher_section = _component(registry, "launcher", launcher) if launcher is not None else None
    guidance_section = _component(registry, "guidance", guidance) if guidance is not None else None
    name = typed.name or (Path(path).stem if path is not None else "run")
    return Recipe(
        name=name,
        components=resolved,
        train=typed.train,
        eval=typed.eval,
        run=typed.run,
        source=str(path) if path is not None else None,
        plugins=list(plugins),
        loggers=loggers,
        registry=registry,
        launcher=launcher_section,
        guidance=guidance_section,
        interpolations=interpolations,
    )
