"""``sandbox export RUN_DIR --format diffusers OUT``: a run's EMA network and schedule as a diffusers pipeline folder.

``OUT`` gets what ``diffusers.DDPMPipeline.from_pretrained(OUT)`` reads:
``model_index.json``, ``unet/config.json`` with
``unet/diffusion_pytorch_model.safetensors``, and
``scheduler/scheduler_config.json``. The weights are the run's EMA weights
(``ema.safetensors``, else the checkpoint :func:`sandbox.engine.sample.find_checkpoint`
picks); the item shape is read from the run's ``samples/final.pt``, so the
data need not be on the exporting machine (else from the dataset). The
engine does the part that is the same for every network:

* the **scheduler**: a ``DDPMScheduler`` (Ho et al. 2020) whose
  ``alphas_cumprod[k]`` is the schedule's ``alpha(t)^2`` at ``t = (k + 1) / T``,
  grid point ``k + 1`` of a discrete schedule (:class:`sandbox.schedule.DiscreteSchedule`,
  ``T = num_steps``; a continuous schedule is read at ``T = 1000`` points).
  The betas are matched against diffusers' own formulas: DDPM's linear betas
  give ``beta_schedule: linear`` with their first and last beta, the cosine
  schedule of Nichol & Dhariwal (2021) with s = 0.008 and betas clipped to
  0.999 gives ``squaredcos_cap_v2``, anything else is written as
  ``trained_betas``. ``train.target`` gives ``prediction_type``
  (:data:`PREDICTION_TYPES`); ``timestep_spacing: trailing`` steps on the
  grid points the sandbox's samplers use;
* the **noise input**: diffusers calls the network with the integer
  timestep ``k`` where the network was trained on the target's ``c_noise``
  (:mod:`sandbox.targets`), ``1000 t = k + 1`` for DDPM's 1,000 steps. The
  engine checks ``c_noise = k + shift`` for one constant ``shift`` and hands
  ``shift`` to the network's exporter, which folds it into the weights;
* the **network**: the denoiser plugin's exporter
  (:class:`sandbox.protocols.DiffusersExport`, registered with
  ``register_exporters``) maps its weights onto a diffusers model.

What diffusers cannot express (EDM preconditioning, a schedule that is not
variance-preserving, a noise input that is not the timestep plus a constant,
a denoiser without an exporter) stops with one message naming the recipe key.
When diffusers is installed, the written model is loaded back and compared
with the network on the same inputs.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import torch
from rich.console import Console

from sandbox.console import console as default_console
from sandbox.contract import is_analytic
from sandbox.engine.build import build_component, build_denoiser
from sandbox.engine.checkpoint import save_safetensors
from sandbox.engine.device import apply_threads
from sandbox.engine.rundir import RunDir, read_json, write_json
from sandbox.errors import ParameterError, RecipeError, SandboxError
from sandbox.plugins import load_entry_points, load_local_plugins, new_plugin_manager
from sandbox.protocols import Build, Schedule, null_label
from sandbox.recipe import Recipe
from sandbox.registry import Component, Registry
from sandbox.targets import scalings

FORMATS = ("diffusers",)
#: ``train.target`` -> ``DDPMScheduler.prediction_type`` (the same three quantities, Salimans & Ho 2022 for v)
PREDICTION_TYPES = {"epsilon": "epsilon", "v": "v_prediction", "x0": "sample"}
CONTINUOUS_STEPS = 1000  # grid points at which a continuous schedule is written; c_noise = 1000 t needs 1000
PIPELINE = "DDPMPipeline"
SCHEDULER = "DDPMScheduler"


def exporters(recipe: Recipe, fmt: str) -> dict[tuple[str, str], Build]:
    """Every plugin's exporters to ``fmt``, as ``{(plugin name, denoiser name): export}``.

    The plugins are those the recipe's registry was built from (the installed
    ones as ``SANDBOX_PLUGINS`` allows, and the recipe's local ``plugins``),
    under the same plugin names, so an exporter goes with the denoiser its
    own plugin registered.
    """
    pm = new_plugin_manager()
    load_entry_points(pm)
    load_local_plugins(pm, recipe.plugins)
    found: dict[tuple[str, str], Build] = {}
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue

        def register(format: str, denoiser: str, export: Build, _plugin: str = str(name)) -> None:
            if format == fmt:
                found[(_plugin, denoiser)] = export

        others = [p for p in pm.get_plugins() if p is not plugin]
        pm.subset_hook_caller("register_exporters", remove_plugins=others)(register=register)
    return found


def _exporter(recipe: Recipe, component: Component, fmt: str) -> Callable[..., Any]:
    found = exporters(recipe, fmt)
    ref = found.get((component.plugin, component.name))
    if ref is None:
        have = sorted(denoiser for _, denoiser in found) or ["none"]
        raise RecipeError(
            f"recipe key 'denoiser.name': {component.name!r} ({component.provider}) has no {fmt} exporter; "
            f"denoisers that have one: {', '.join(have)}. A plugin adds one with the register_exporters hook "
            "(sandbox.protocols.DiffusersExport)"
        )
    return Component("exporter", component.name, ref, None, "", component.plugin).resolve()


# ------------------------------------------------------------------------------------------------ scheduler


def _round(x: float) -> float:
    """``x`` to 12 significant digits: 1e-4, not the 1.0000000000000286e-4 a cumulative product gives back."""
    return float(f"{x:.12g}")


def _cosine_betas(steps: int) -> torch.Tensor:
    """diffusers' ``squaredcos_cap_v2``: Nichol & Dhariwal (2021), eq. 17, s = 0.008, betas clipped to 0.999."""
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    return torch.tensor([min(1 - f((i + 1) / steps) / f(i / steps), 0.999) for i in range(steps)], dtype=torch.float64)


def _betas(betas: torch.Tensor) -> dict[str, Any]:
    """The ``DDPMScheduler`` keys that give ``betas``: a named formula of diffusers' where one matches."""
    T = len(betas)
    linear = torch.linspace(float(betas[0]), float(betas[-1]), T, dtype=torch.float64)
    if (betas - linear).abs().max() <= 1e-12:
        return {"beta_schedule": "linear", "beta_start": _round(float(betas[0])), "beta_end": _round(float(betas[-1]))}
    if (betas - _cosine_betas(T)).abs().max() <= 1e-12:
        return {"beta_schedule": "squaredcos_cap_v2"}
    return {"beta_schedule": "linear", "trained_betas": betas.tolist()}


def _key(recipe: Recipe, kind: str, field: str) -> str:
    """``kind.field`` when the component has that parameter, else ``kind.name``."""
    params = recipe.components[kind][1]
    return f"{kind}.{field}" if params is not None and hasattr(params, field) else f"{kind}.name"


def scheduler_config(recipe: Recipe, schedule: Schedule) -> tuple[dict[str, Any], float]:
    """The run's ``DDPMScheduler`` config and the noise-input shift ``c_noise(k) - k`` (see the module docstring)."""
    target = recipe.train.target
    if target not in PREDICTION_TYPES:
        raise RecipeError(
            f"recipe key 'train.target': {target!r}; diffusers' {SCHEDULER} predicts "
            f"{', '.join(PREDICTION_TYPES.values())} (train.target {', '.join(PREDICTION_TYPES)}), with the "
            "timestep as the network's noise input; other preconditionings have no counterpart there"
        )
    T = schedule.num_steps or CONTINUOUS_STEPS
    k = torch.arange(T, dtype=torch.float64)
    s = scalings(target, schedule, (k + 1) / T, recipe.train.sigma_data)
    name = recipe.components["schedule"][0]
    if (s.alpha**2 + s.sigma**2 - 1).abs().max() > 1e-9:
        raise RecipeError(
            f"recipe key 'schedule.name': {name!r} is not variance-preserving (alpha^2 + sigma^2 != 1); "
            f"diffusers' {SCHEDULER} is (x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps)"
        )
    shift = s.c_noise - k
    if (shift - shift[0]).abs().max() > 1e-6:
        key = _key(recipe, "schedule", "num_steps")
        raise RecipeError(
            f"recipe key '{key}': schedule {name!r} with {T} steps gives the network the noise input "
            f"{float(s.c_noise[0]):g}, {float(s.c_noise[1]):g}, ... at diffusers' timesteps 0, 1, ...; diffusers "
            f"feeds the integer timestep itself and its embedding has no scale, so only a noise input of the "
            f"timestep plus a constant maps (c_noise = 1000 t with {CONTINUOUS_STEPS} steps)"
        )
    alpha_bar = s.alpha**2
    betas = 1.0 - alpha_bar / torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
    sampler = recipe.components["sampler"][1]
    config = {
        "_class_name": SCHEDULER,
        "num_train_timesteps": T,
        **_betas(betas),
        "prediction_type": PREDICTION_TYPES[target],
        # the run's sampler's choices where it has them; else DDPM's for CIFAR-10 (diffusers' defaults)
        "variance_type": "fixed_large" if getattr(sampler, "variance", None) == "large" else "fixed_small",
        "clip_sample": bool(getattr(sampler, "clip_x0", True)),
        "clip_sample_range": 1.0,
        "thresholding": False,
        "timestep_spacing": "trailing",
        "steps_offset": 0,
        "rescale_betas_zero_snr": False,
    }
    return config, float(shift[0])


# ------------------------------------------------------------------------------------------------ export


def _num_classes(run_dir: Path, recipe: Recipe, registry: Registry) -> int:
    """A conditional run's number of classes: from its ``summary.json``, else the dataset; 0 when unconditional."""
    if not recipe.train.conditional:
        return 0
    summary = read_json(RunDir(run_dir).summary)
    if isinstance(summary, dict) and isinstance(summary.get("classes"), list) and summary["classes"]:
        return len(summary["classes"])
    name, params = recipe.components["dataset"]
    return len(build_component(registry.get("dataset", name, key="dataset.name"), params).classes or [])


def _item_shape(run_dir: Path, recipe: Recipe, registry: Registry) -> tuple[int, ...]:
    """The data's item shape: from the run's final samples (memory-mapped: nothing is read), else the dataset."""
    final = RunDir(run_dir).final_samples
    if final.is_file():
        try:
            samples = torch.load(final, map_location="cpu", mmap=True, weights_only=True)
        except Exception:  # unreadable: the dataset says it too
            samples = None
        if isinstance(samples, torch.Tensor) and samples.ndim >= 2:
            return tuple(samples.shape[1:])
    name, params = recipe.components["dataset"]
    return tuple(build_component(registry.get("dataset", name, key="dataset.name"), params).shape)


def _load_ema(run_dir: Path, net: torch.nn.Module, checkpoint_path: Optional[Path], console: Console) -> str:
    """Load the run's EMA weights into ``net``; return where they came from."""
    from sandbox.engine.checkpoint import FINAL, CheckpointError
    from sandbox.engine.sample import find_checkpoint

    ema = RunDir(run_dir).ema
    if checkpoint_path is None and ema.is_file():
        from safetensors.torch import load_file

        source, hint = str(ema), f"; export from a checkpoint with --checkpoint {run_dir / 'checkpoints' / FINAL}"
        load = lambda: load_file(ema)
    else:
        path, state = find_checkpoint(run_dir, checkpoint_path, console)
        source, hint = f"{path} (step {int(state['step']):,})", ""
        load = lambda: state["ema"]["model"]
    try:
        net.load_state_dict(load())
    except Exception as exc:
        detail = (str(exc).splitlines() or [""])[0]
        raise CheckpointError(
            f"{source} holds no EMA weights for this run's network ({type(exc).__name__}: {detail}){hint}"
        ) from exc
    return source


def export_run(
    run_dir: Path,
    out: Path,
    *,
    fmt: str = "diffusers",
    checkpoint_path: Optional[Path] = None,
    console: Optional[Console] = None,
    trusted: Sequence[str] = (),
    threads: Optional[int] = None,
) -> Path:
    """Write the run's EMA network and scheduler as a diffusers ``DDPMPipeline`` folder ``out``; return ``out``.

    ``trusted``: the local plugins named with ``--plugin`` that the run's recipe may load
    (:func:`sandbox.engine.sample.sampling_recipe`); ``threads``: torch's CPU threads (``--threads``; None:
    the run's ``run.threads``)."""
    from sandbox.engine.sample import sampling_recipe

    console = console or default_console
    run_dir, out = Path(run_dir), Path(out)
    if fmt not in FORMATS:
        raise SandboxError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SandboxError(f"{out} exists and is not an empty folder: name a new one")
    recipe = sampling_recipe(run_dir, [], trusted)
    apply_threads(threads if threads is not None else recipe.run.threads)
    registry = recipe.registry
    assert registry is not None
    components = {kind: registry.get(kind, name, key=f"{kind}.name") for kind, (name, _) in recipe.components.items()}
    denoiser, params = recipe.components["denoiser"]
    schedule = build_component(components["schedule"], recipe.components["schedule"][1])
    shape = _item_shape(run_dir, recipe, registry)
    classes = _num_classes(run_dir, recipe, registry)
    net = build_denoiser(components["denoiser"], params, shape, classes)
    if is_analytic(net):
        raise RecipeError(f"recipe key 'denoiser.name': {denoiser!r} is an analytic denoiser: it has no weights")
    export = _exporter(recipe, components["denoiser"], fmt)
    scheduler, shift = scheduler_config(recipe, schedule)
    source = _load_ema(run_dir, net, checkpoint_path, console)
    net = net.eval().requires_grad_(False)
    try:
        model, weights = export(net.state_dict(), params, shape, time_shift=shift)
    except ParameterError as exc:
        raise RecipeError(f"{exc.in_section('denoiser')} ({components['denoiser'].provider})") from exc

    version = _diffusers_version()
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        (partial / "unet").mkdir(parents=True)
        (partial / "scheduler").mkdir()
        write_json(partial / "unet" / "config.json", {**model, "_diffusers_version": version})
        save_safetensors(partial / "unet" / "diffusion_pytorch_model.safetensors", weights, {"format": "pt"})
        write_json(partial / "scheduler" / "scheduler_config.json", {**scheduler, "_diffusers_version": version})
        index = {
            "_class_name": PIPELINE,
            "_diffusers_version": version,
            "scheduler": ["diffusers", SCHEDULER],
            "unet": ["diffusers", model["_class_name"]],
        }
        write_json(partial / "model_index.json", index)
        if out.exists():
            out.rmdir()  # empty, checked above
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    betas = scheduler.get("beta_schedule") if "trained_betas" not in scheduler else "trained_betas"
    console.print(
        f"exported {denoiser} ({source}) to {out}: {model['_class_name']} + {SCHEDULER} ({betas}, "
        f"{scheduler['num_train_timesteps']} steps, prediction_type {scheduler['prediction_type']}; "
        f"the network reads timestep + {shift:g})"
    )
    difference = check(out, net, shape, scheduler["num_train_timesteps"], shift, classes)
    if difference is not None:
        console.print(f"diffusers' {model['_class_name']} matches the network to {difference:.1e} (max abs)")
    return out


def _diffusers_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("diffusers")
    except importlib.metadata.PackageNotFoundError:
        return "0.30.0"  # the config keys written here are read alike from this version on


def check(
    out: Path, net: torch.nn.Module, shape: tuple[int, ...], steps: int, shift: float, classes: int = 0
) -> Optional[float]:
    """Load ``out``'s model with diffusers (when installed) and return its largest difference from ``net``.

    Both get the same two inputs at timesteps 0, T/2 and T-1 (the network at
    ``k + shift``), a class-conditional one with the first class and the null class as ``class_labels``.
    A difference above 1e-3 of the output's scale is a mapping error and raises :class:`SandboxError`;
    fp32 rounding is far below.
    """
    try:
        import diffusers
    except ImportError:
        return None
    config = json.loads((out / "unet" / "config.json").read_text())
    model = getattr(diffusers, config["_class_name"]).from_pretrained(out / "unet").eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((2, *shape), generator=generator)
    worst, scale = 0.0, 0.0
    with torch.no_grad():
        for k in sorted({0, steps // 2, steps - 1}):
            timesteps = torch.full((2,), k, dtype=torch.long)
            if classes:
                labels = torch.tensor([0, null_label(classes)])
                ours = net(x, torch.full((2,), k + shift), labels)
                theirs = model(x, timesteps, class_labels=labels).sample
            else:
                ours = net(x, torch.full((2,), k + shift))
                theirs = model(x, timesteps).sample
            worst = max(worst, float((ours - theirs).abs().max()))
            scale = max(scale, float(ours.abs().max()))
    if worst > 1e-3 * max(scale, 1.0):
        raise SandboxError(
            f"diffusers' {config['_class_name']} written to {out} differs from the network by {worst:.3g} "
            f"(outputs up to {scale:.3g}): the exporter's mapping is wrong"
        )
    return worst
