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
from sandbox.params import at_least, between, finite, one_of, positive
from sandbox.plugins import LOCAL_PREFIX, plugin_specs, refuse_untrusted
from sandbox.registry import KINDS, Registry
from sandbox.targets import TARGETS, WEIGHTINGS

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16", "fp16")
RECIPE_KEYS = ("name", "base", "plugins", *KINDS, "guidance", "launcher", "matrix", "train", "eval", "run")
IMAGE_METRICS = ("fid", "kid")  # eval.metrics: Frechet and Kernel Inception Distance (sandbox.engine.fid)
METRICS = (*IMAGE_METRICS, "nll")  # eval.metrics; nll: the likelihood of the validation split (eval.nll)
NLL_ESTIMATORS = ("vlb", "elbo", "ode")  # sandbox.engine.likelihood


@dataclass
class TrainConfig:
    # fmt: off
    steps: int = 1000              # optimizer steps
    batch_size: int = 128          # examples per step
    lr: float = 2e-4               # peak AdamW learning rate
    warmup_steps: int = 100        # linear learning-rate warm-up, in steps
    weight_decay: float = 0.0      # AdamW decoupled weight decay
    grad_clip: float = 1.0         # max global gradient norm; 0 disables clipping
    ema_decay: float = 0.999       # EMA of the weights used for sampling
    target: str = "epsilon"        # what the network predicts: epsilon, x0, v, or edm (EDM preconditioning)
    weighting: str = "uniform"     # loss weighting: uniform, min_snr (Hang et al. 2023) or edm (Karras et al. 2022)
    min_snr_gamma: float = 5.0     # gamma of the min-SNR weighting
    sigma_data: float = 0.5        # data standard deviation assumed by EDM preconditioning and weighting
    log_every: int = 50            # steps between metrics.jsonl lines
    val_every: int = 250           # steps between validation losses; 0: only at the end
    sample_every: int = 0          # steps between sample grids; 0: only at the end
    checkpoint_every: int = 0      # steps between checkpoints; 0: only at the end
    checkpoint_minutes: float = 0.0  # minutes of wall clock between checkpoints (for job time limits); 0: off
    keep_checkpoints: int = 0      # newest step checkpoints kept (final.pt is always kept); 0: all
    conditional: bool = False      # class-conditional: the network sees each item's label (the data's classes)
    label_dropout: float = 0.1     # share of labels replaced by the null class, for guidance (Ho & Salimans 2022)
    # fmt: on

    def __post_init__(self) -> None:
        one_of(self, "target", TARGETS)
        one_of(self, "weighting", WEIGHTINGS)
        positive(self, "lr", "min_snr_gamma", "sigma_data")
        for key in ("steps", "warmup_steps", "val_every", "sample_every", "checkpoint_every", "keep_checkpoints"):
            at_least(self, key, 0)
        at_least(self, "checkpoint_minutes", 0.0)
        at_least(self, "batch_size", 1)
        at_least(self, "log_every", 1)
        at_least(self, "weight_decay", 0.0)
        at_least(self, "grad_clip", 0.0)
        between(self, "ema_decay", 0.0, 1.0, high_open=True)
        between(self, "label_dropout", 0.0, 1.0, high_open=True)


@dataclass
class NllConfig:
    """``eval.nll``: how ``eval.metrics: [nll]`` and ``sandbox likelihood`` estimate ``-log p(x)``."""

    # fmt: off
    estimators: list[str] = field(default_factory=lambda: ["ode"])  # vlb, elbo and/or ode
    split: str = "val"             # the items scored: val (held out), or train (a gap between the two is overfitting)
    items: int = 1000              # items scored, the split's first (0: the whole split)
    batch: int = 500               # items per batch
    draws: int = 16                # elbo: log-SNR draws per item
    variance: str = "beta"         # vlb: the reverse variance, beta (beta_t) or posterior (beta~_t)
    divergence: str = "auto"       # ode: exact, hutchinson, or auto (exact for vectors of <= 64 coordinates)
    probes: int = 1                # ode: Hutchinson probes per item
    rtol: float = 1e-3             # ode: the solver's relative tolerance
    atol: float = 1e-3             # ode: the solver's absolute tolerance
    log_snr_max: float = 12.0      # the data's end: at most this log-SNR (and the schedule's lowest time)
    dequantize: Optional[bool] = None  # ode: uniform dequantisation of discrete data; null: on for discrete data
    seed: int = 0                  # the estimators' noise
    # fmt: on

    def __post_init__(self) -> None:
        try:
            bad = [e for e in self.estimators if e not in NLL_ESTIMATORS]
            if not self.estimators or bad or len(set(self.estimators)) != len(self.estimators):
                expected = f"a non-empty list of distinct names from {', '.join(NLL_ESTIMATORS)}"
                raise ParameterError("estimators", list(self.estimators), expected)
            at_least(self, "items", 0)
            for key in ("batch", "draws", "probes"):
                at_least(self, key, 1)
            one_of(self, "split", ("val", "train"))
            one_of(self, "variance", ("beta", "posterior"))
            one_of(self, "divergence", ("auto", "exact", "hutchinson"))
            positive(self, "rtol", "atol")
            finite(self, "log_snr_max")
        except ParameterError as exc:
            raise ParameterError(f"nll.{exc.key}", exc.value, exc.expected) from None


@dataclass
class EvalConfig:
    # fmt: off
    val_batches: int = 8           # validation batches per evaluation (0: the whole split)
    num_samples: int = 64          # samples generated at the end of the run
    sample_batch: int = 256        # samples per sampler call
    grid_samples: int = 64         # samples drawn in each intermediate grid
    metrics: list[str] = field(default_factory=list)  # fid, kid (of the final samples), nll (of the validation split)
    classes: Optional[list[Any]] = None  # a conditional run's classes to draw (indices or names); null: all, balanced
    nll: NllConfig = field(default_factory=NllConfig)  # the likelihood's estimators and settings
    # fmt: on

    def __post_init__(self) -> None:
        at_least(self, "val_batches", 0)
        for key in ("num_samples", "sample_batch", "grid_samples"):
            at_least(self, key, 1)
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or len(set(self.metrics)) != len(self.metrics):
            expected = f"a list of distinct names from {', '.join(METRICS)}"
            raise ParameterError("metrics", list(self.metrics), expected)
        if self.classes is not None and (
            not self.classes or not all(isinstance(c, (int, str)) and not isinstance(c, bool) for c in self.classes)
        ):
            raise ParameterError("classes", list(self.classes), "a non-empty list of class indices or names, or null")

    @property
    def image_metrics(self) -> list[str]:
        """The metrics of :data:`IMAGE_METRICS` asked for (FID and KID, :mod:`sandbox.engine.fid`)."""
        return [m for m in self.metrics if m in IMAGE_METRICS]


@dataclass
class RunConfig:
    # fmt: off
    device: str = "auto"           # auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps
    seed: int = 0                  # seeds data order, initialisation, noise and sampling
    output: str = "runs"           # parent folder of run folders
    workers: int = 0               # DataLoader worker processes
    precision: str = "fp32"        # fp32; bf16 or fp16 autocast (fp16 with a gradient scaler)
    compile: bool = False          # compile the denoiser network with torch.compile
    channels_last: Optional[bool] = None  # channels-last memory for image data; null: on CUDA only
    data_on_device: Optional[bool] = None  # batch a stored train split on the device; null: when it fits
    threads: int = 0               # CPU threads for torch; 0 leaves torch's default
    loggers: list[Any] = field(default_factory=list)  # loggers receiving the run's events: names or {name: ...}
    # fmt: on

    def __post_init__(self) -> None:
        base, _, index = self.device.partition(":")
        if base not in DEVICES or (index and not (base == "cuda" and index.isdigit())):
            raise ParameterError("device", self.device, f"one of {', '.join(DEVICES)} or cuda:N")
        one_of(self, "precision", PRECISIONS)
        at_least(self, "workers", 0)
        at_least(self, "threads", 0)
        names = [entry.get("name") if isinstance(entry, dict) else entry for entry in self.loggers]
        if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
            expected = "a list of distinct logger names, or {name: ..., <its parameters>} mappings"
            raise ParameterError("loggers", list(self.loggers), expected)


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
