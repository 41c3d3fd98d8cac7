"""``sandbox sample RUN_DIR``: draw samples from a run's EMA weights with its sampler or any other.

The run's ``recipe.yaml`` is reloaded with overrides; only keys that leave
the weights' meaning alone may change (:data:`SAMPLING_KEYS`: the sampler,
the ``eval`` section, the device, threads and the sampling seed), so
``sampler.name=dpmpp_2m sampler.steps=10`` compares samplers on one trained
network; the run's ``clip_x0`` (:data:`CARRIED`) goes with the other sampler
unless the overrides set it. The weights come from ``checkpoints/final.pt``, else (an
interrupted run) from the newest step checkpoint that loads, always with
``weights_only=True``. Each call writes a new folder
``RUN_DIR/samples/<sampler>-<steps or NFE>-<YYYYmmdd-HHMMSS>/``.

With the run's own recipe and seed, the samples are the run's
``samples/final.pt`` again (on the CPU, bit for bit): the same weights,
the same seed (``run.seed +`` :data:`sandbox.engine.generate.FINAL_SEED`) and the same batches.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from sandbox.console import console as default_console
from sandbox.console import fmt, table
from sandbox.engine import checkpoint, fid
from sandbox.engine.build import Parts, build_parts, real_heldout
from sandbox.engine.device import apply_threads, pick_device
from sandbox.engine.generate import FINAL_SEED, draw, in_data_units, render, sampling_record
from sandbox.engine.guide import load_guide
from sandbox.engine.health import sample_health
from sandbox.engine.images import save_png
from sandbox.engine.memory import keep_freed_memory
from sandbox.engine.precond import LabelledDenoise, Preconditioned, exact_denoise
from sandbox.engine.resume import RESUMABLE
from sandbox.engine.run import guidance_text, score
from sandbox.engine.rundir import RunDir, SampleDir, atomic_write, new_run_dir, read_json, write_json
from sandbox.errors import RecipeError, SandboxError
from sandbox.recipe import Recipe, load_recipe

SAMPLING_SECTIONS = ("sampler.", "eval.", "guidance.")  # every key under these may change
SAMPLING_KEYS = ("run.device", "run.threads", "run.seed")  # and these (run.seed: the sampling seed)
# Sampler settings that describe the data, not the solver: a sampler asked for in place of the run's keeps the
# run's value (the quickstart's clip_x0: true, its data lying in [-1, 1]) unless the overrides set it.
CARRIED = ("clip_x0",)


def sampling_recipe(run_dir: Path, overrides: list[str], trusted: Iterable[str] = ()) -> Recipe:
    """The run's recipe with ``overrides``, which may change only sampling keys (else :class:`RecipeError`).

    The folder's local plugins load only as :func:`sandbox.recipe.load_recipe` allows with ``trusted``
    (the modules and files named with ``--plugin``): a run folder is data, not code."""
    path = RunDir(run_dir).recipe
    if not path.is_file():
        raise SandboxError(f"{run_dir} is not a run folder (it has no {RunDir.RECIPE})")
    trusted = list(trusted)
    original = load_recipe(path, trusted=trusted)
    recipe = load_recipe(path, overrides, trusted=trusted)
    checkpoint.refuse_changes(
        original.to_dict(),
        recipe.to_dict(),
        _may_change,
        lambda key, old, new: (
            f"recipe key '{key}': cannot change when sampling ({old!r} in the run, {new!r} "
            f"asked): the weights were trained with the run's value; only "
            f"{', '.join(s + '*' for s in SAMPLING_SECTIONS)}, {', '.join(SAMPLING_KEYS)} may"
        ),
        RecipeError,
    )
    own_name, own_params = original.components["sampler"]
    name, params = recipe.components["sampler"]
    given = {o.split("=")[0].lstrip("+~") for o in overrides}
    if name != own_name and "sampler" not in given:  # a whole new sampler section carries nothing
        for key, value in carried_settings(own_params, params).items():
            if f"sampler.{key}" not in given:
                setattr(params, key, value)
    return recipe


def carried_settings(own: Any, params: Any) -> dict[str, Any]:
    """The :data:`CARRIED` settings of the run's sampler parameters ``own`` that another sampler's ``params``
    also have: what that sampler takes from the run when it samples, is ranked or is tuned in its place."""
    return {key: getattr(own, key) for key in CARRIED if hasattr(own, key) and hasattr(params, key)}


def resolve_run_grid(run_dir: Path, recipe: Recipe) -> Recipe:
    """``sampler.grid: NAME`` where the run folder holds ``grids/NAME.json`` (``sandbox tune-steps``) steps on
    that file's times: a run's tuned grids come before the registry's names."""
    params = recipe.components["sampler"][1]
    value = getattr(params, "grid", None)
    if isinstance(value, str) and not value.endswith(".json"):
        saved = RunDir(run_dir).grid(value)
        if saved.is_file():
            params.grid = str(saved)
    return recipe


def _may_change(key: str) -> bool:
    return key.startswith(SAMPLING_SECTIONS) or key in SAMPLING_KEYS or key == "guidance"


def find_checkpoint(run_dir: Path, path: Path | None, console: Console) -> tuple[Path, dict[str, Any]]:
    """``path``, else ``checkpoints/final.pt``, else the newest step checkpoint that loads (with a note)."""
    if path is not None:
        return Path(path), checkpoint.load(Path(path))
    folder = RunDir(run_dir).checkpoints
    final = RunDir(run_dir).final_checkpoint
    if final.exists():
        try:
            return final, checkpoint.load(final)
        except checkpoint.CheckpointError as exc:
            older = next((p for p in checkpoint.candidates(folder) if p != final and _loads(p)), None)
            hint = f"; to sample from an earlier one, add --checkpoint {older}" if older else ""
            raise checkpoint.CheckpointError(f"{exc}{hint}") from exc
    found = checkpoint.latest_good(folder)
    if found is not None:
        candidate, state = found
        status = (read_json(RunDir(run_dir).status) or {}).get("status", "unknown")
        console.print(
            f"[yellow]note:[/] the run is unfinished (status: {status}; no {final}); sampling from "
            f"{candidate.name}, step {state['step']:,}"
        )
        return candidate, state
    raise SandboxError(
        f"{run_dir} has no checkpoint to sample from (no {folder}/*.pt); it stopped before its "
        "first one: resume it with sandbox run --resume"
    )


def _loads(path: Path) -> bool:
    try:
        checkpoint.load(path)
    except checkpoint.CheckpointError:
        return False
    return True


def ema_denoiser(
    recipe: Recipe, parts: Parts, state: dict[str, Any], path: Path, device: torch.device
) -> Preconditioned:
    """The checkpoint's EMA weights in the recipe's network, preconditioned for its prediction target."""
    saved = state["recipe"] if isinstance(state.get("recipe"), dict) else {}
    checkpoint.refuse_changes(
        saved,
        recipe.to_dict(),
        lambda key: _may_change(key) or key in RESUMABLE or key == "name",
        lambda key, old, new: (
            f"checkpoint {path} was written by another recipe: recipe key '{key}' is {old!r} "
            f"there and {new!r} in the run"
        ),
        checkpoint.CheckpointError,
    )
    assert parts.net is not None
    net = parts.net
    try:
        net.load_state_dict(state["ema"]["model"])
    except (KeyError, TypeError, RuntimeError) as exc:
        detail = (str(exc).splitlines() or [""])[0]
        raise checkpoint.CheckpointError(
            f"checkpoint {path} holds no EMA weights for this network ({type(exc).__name__}: {detail})"
        ) from exc
    net = net.to(device).eval().requires_grad_(False)
    return Preconditioned(net, parts.schedule, recipe.train.target, recipe.train.sigma_data).eval()


def sample_run(
    run_dir: Path,
    overrides: list[str],
    *,
    num: int | None = None,
    checkpoint_path: Path | None = None,
    png: bool = False,
    console: Console | None = None,
    trusted: Iterable[str] = (),
) -> Path:
    """Draw ``num`` samples (default ``eval.num_samples``) from a run's EMA weights into a new folder, returned.

    The folder holds ``grid.png`` (where the data has a picture), ``samples.pt``,
    ``summary.json`` (checkpoint, overrides, sampler, NFE, seconds and the
    dataset's quality figures next to held-out real data's) and, with ``png``,
    one 8-bit PNG per sample in ``png/`` for external FID tools. ``trusted``: the local plugins named with
    ``--plugin`` that the run's recipe may load (:func:`sampling_recipe`).
    """
    console = console or default_console
    run_dir = Path(run_dir)
    recipe = resolve_run_grid(run_dir, sampling_recipe(run_dir, overrides, trusted))
    n = num if num is not None else recipe.eval.num_samples
    if n < 1:
        raise SandboxError(f"--num {n}: expected 1 or more samples")
    torch.manual_seed(recipe.run.seed)
    apply_threads(recipe.run.threads)
    keep_freed_memory()
    device = pick_device(recipe.run.device)
    parts = build_parts(recipe)
    fid.require(recipe.eval.image_metrics, parts.data.shape)  # FID and KID: the extra and the weights, first
    shape = tuple(parts.data.shape)
    if png and not (len(shape) == 3 and shape[0] in (1, 3)):
        raise SandboxError(
            f"--png needs images of 1 or 3 channels; dataset '{recipe.components['dataset'][0]}' "
            f"gives items of shape {shape}"
        )
    parts.guide = load_guide(recipe, shape, parts.classes, device, trusted)
    denoise: LabelledDenoise
    if parts.exact_x0 is not None:  # an analytic denoiser: no weights
        if checkpoint_path is not None:
            raise SandboxError(
                f"{run_dir} samples with an analytic denoiser, which has no checkpoint; drop --checkpoint"
            )
        ckpt, step = None, 0
        denoise = exact_denoise(parts.exact_x0, parts.schedule, recipe.train.target, recipe.train.sigma_data)
    else:
        ckpt, state = find_checkpoint(run_dir, checkpoint_path, console)
        step = int(state["step"])
        denoise = ema_denoiser(recipe, parts, state, ckpt, device)

    sampler, params = recipe.components["sampler"]
    nfe_planned = parts.sampler.nfe(parts.schedule)
    label = getattr(params, "steps", None) or nfe_planned
    folder = SampleDir(new_run_dir(RunDir(run_dir).samples, f"{sampler}-{label}"))
    try:
        drawn = draw(recipe, parts, denoise, device, n, recipe.run.seed + FINAL_SEED, console)
        samples, labels = drawn.samples, drawn.labels
        picture = render(parts, samples, labels)
        if picture is not None:
            save_png(picture, folder.picture)
        saved_samples = in_data_units(parts, samples)
        atomic_write(folder.samples, lambda handle: torch.save(saved_samples, handle))
        if labels is not None:
            atomic_write(folder.labels, lambda handle: torch.save(labels, handle))
        if png:
            _write_pngs(folder.pngs, samples)
        quality = score(recipe, parts, samples, device, run_dir, console, labels)
        saved = recipe.to_dict()
        summary = {
            "run_dir": str(run_dir),
            "folder": str(folder.path),
            "checkpoint": {"path": str(ckpt) if ckpt else None, "step": step},
            "overrides": list(overrides),
            "device": str(device),
            "seed": recipe.run.seed + FINAL_SEED,
            "sampler": {"name": sampler, "params": {k: v for k, v in saved["sampler"].items() if k != "name"}},
            **({"guidance": saved["guidance"]} if "guidance" in saved else {}),
            "sample_batch": recipe.eval.sample_batch,
            **sampling_record(drawn),
            "sample_quality": quality,
            "sample_health": sample_health(samples, real_heldout(parts, len(samples))),
            "outputs": {
                "samples": SampleDir.SAMPLES,
                "labels": SampleDir.LABELS if labels is not None else None,
                "grid": SampleDir.PICTURE if picture is not None else None,
                "png": f"{SampleDir.PNGS}/" if png else None,
            },
        }
        write_json(folder.summary, summary)
    except BaseException:
        shutil.rmtree(folder.path, ignore_errors=True)  # a folder without summary.json would read as finished
        raise
    console.print(_table(summary))
    return folder.path


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] as 8-bit values in [0, 255], channels last: the values FID's features see too."""
    return fid.to_uint8(images).permute(0, 2, 3, 1).cpu()


def _write_pngs(folder: Path, samples: torch.Tensor) -> None:
    """One PNG per sample, ``000000.png`` ...; written into a temporary folder renamed when complete."""
    from PIL import Image

    partial = folder.with_name(folder.name + ".partial")
    partial.mkdir()
    width = max(6, len(str(len(samples) - 1)))
    for i, pixels in enumerate(_to_uint8(samples).numpy()):
        Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(partial / f"{i:0{width}d}.png")
    partial.rename(folder)


def _table(summary: dict[str, Any]) -> Any:
    """The table printed at the end: sampler, NFE, time, quality of generated and real held-out data."""
    params = ", ".join(f"{k}={fmt(v)}" for k, v in summary["sampler"]["params"].items())
    ckpt = summary["checkpoint"]
    rows = [
        ["sampler", f"{summary['sampler']['name']} ({params})" if params else summary["sampler"]["name"]],
        ["checkpoint", f"{ckpt['path']} (step {ckpt['step']:,})" if ckpt["path"] else "analytic denoiser"],
        ["samples", summary["num_samples"]],
        ["NFE per sample", summary["nfe_per_sample"]],
        *([["guidance", guidance_text(summary["guidance"])]] if summary.get("guidance") else []),
        *([["classes drawn", len(summary["classes"])]] if summary.get("classes") else []),
        ["sampling time (s)", summary["seconds"]],
    ]
    quality = summary["sample_quality"]
    for metric, value in quality.get("generated", {}).items():
        rows.append(
            [f"{metric}: generated / real held-out", f"{fmt(value)} / {fmt(quality['real_heldout'].get(metric))}"]
        )
    rows.append(["folder", summary["folder"]])
    return table("Samples", ["", "value"], rows)
