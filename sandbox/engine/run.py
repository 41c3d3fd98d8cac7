"""``sandbox run``: build the parts, train, validate, sample, score, and write the run folder."""

from __future__ import annotations

import dataclasses
import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Optional

import torch
from rich.console import Console
from rich.markup import escape

from sandbox.console import console as default_console
from sandbox.console import fmt, progress, table
from sandbox.engine import checkpoint, distributed, fid
from sandbox.engine.build import Parts, build_parts, count_parameters, heldout_labels, real_heldout
from sandbox.engine.condition import class_spread
from sandbox.engine.device import apply_threads
from sandbox.engine.events import RunEvents, enabled_loggers
from sandbox.engine.generate import FINAL_SEED, GRID_SEED, draw, generate, in_data_units, render, sampling_record
from sandbox.engine.guide import load_guide
from sandbox.engine.health import sample_health
from sandbox.engine.images import save_png
from sandbox.engine.likelihood import evaluate as nll
from sandbox.engine.memory import keep_freed_memory
from sandbox.engine.precond import LabelledDenoise, Preconditioned, exact_denoise
from sandbox.engine.rundir import RunDir, check_output, new_run_dir, read_json, write_json, write_text
from sandbox.engine.runlock import RunLock, host
from sandbox.engine.training import Trainer, TrainState
from sandbox.errors import Diverged, Interrupted
from sandbox.protocols import RunInfo
from sandbox.recipe import Recipe
from sandbox.registry import KINDS


def component_rows(recipe: Recipe, parts: Parts) -> list[list[Any]]:
    rows = []
    for kind in KINDS:
        name, params = recipe.components[kind]
        comp = parts.components[kind]
        size = fmt(count_parameters(parts.net)) if kind == "denoiser" and parts.net is not None else ""
        settings = ", ".join(f"{k}={fmt(v)}" for k, v in (dataclasses.asdict(params) if params else {}).items())
        rows.append([kind, name, comp.provider, size, settings])
    if recipe.guidance is not None and "guidance" in parts.components:
        name, params = recipe.guidance
        settings = ", ".join(f"{k}={fmt(v)}" for k, v in (dataclasses.asdict(params) if params else {}).items())
        rows.append(["guidance", name, parts.components["guidance"].provider, "", settings])
    return rows


def prepare(
    recipe: Recipe,
    run_dir: Optional[Path],
    held: ExitStack,
    *,
    resume: bool = False,
    previous_threads: Optional[int] = None,
) -> tuple[torch.device, Parts, Path]:
    """Seed, pick the device, build and check every part, then open the run folder with the resolved recipe.

    The folder is new under ``run.output`` unless ``run_dir`` is given: a
    sweep's cell folder (which must not exist yet), or with ``resume`` the
    folder of the run to continue. Under torchrun, every process joins the
    process group and gets its own device (:func:`sandbox.engine.distributed.setup`);
    rank 0 alone creates the folder and tells the others its path. Torch's CPU threads come from
    ``run.threads`` (:func:`sandbox.engine.device.apply_threads`; a resumed run keeps ``previous_threads``,
    its first session's choice, when the setting is automatic); the C allocator keeps freed memory for reuse
    (:func:`sandbox.engine.memory.keep_freed_memory`). Rank 0 takes the folder's
    :class:`~sandbox.engine.runlock.RunLock` into ``held`` (a resume before any work), so a second
    process on the folder stops at once.
    """
    if run_dir is None:
        check_output(recipe.run.output, recipe.name)  # before any work
    torch.manual_seed(recipe.run.seed)
    apply_threads(recipe.run.threads, previous_threads)
    keep_freed_memory()  # the C allocator keeps what a step frees for the next step
    device = distributed.setup(recipe)
    if resume and run_dir is not None and distributed.is_main():
        held.enter_context(RunLock(run_dir))
    parts = build_parts(recipe)  # every part is checked against its protocol before any work
    fid.require(recipe.eval.image_metrics, parts.data.shape)  # FID and KID: the extra and the weights, before work
    if nll.wanted(recipe):
        nll.check(recipe, parts)  # the likelihood's estimators apply to this schedule and data
    parts.guide = load_guide(recipe, tuple(parts.data.shape), parts.classes, device, None)
    if distributed.is_main():
        if run_dir is None:
            run_dir = new_run_dir(recipe.run.output, recipe.name)
        else:
            run_dir = Path(run_dir)
            run_dir.mkdir(parents=True, exist_ok=resume)
        if not resume:
            held.enter_context(RunLock(run_dir))
        write_text(RunDir(run_dir).recipe, recipe.to_yaml())
        RunDir(run_dir).samples.mkdir(exist_ok=resume)
    run_dir = Path(distributed.broadcast_object(str(run_dir)))
    return device, parts, run_dir


def train(
    recipe: Recipe,
    parts: Parts,
    device: torch.device,
    run_dir: Path,
    console: Console,
    *,
    resume: bool = False,
    state: Optional[dict[str, Any]] = None,
    events: Optional[RunEvents] = None,
    guide: Optional[LabelledDenoise] = None,
) -> tuple[TrainState, Preconditioned]:
    """Train the denoiser network (continuing from ``state``, a checkpoint's, when given); returns the final
    state and the EMA weights' denoise function. Writes ``final.pt`` and ``ema.safetensors``."""

    def sample_grid(step: int, denoise: Preconditioned) -> None:
        drawn = generate(
            recipe, parts, denoise, device, recipe.eval.grid_samples, recipe.run.seed + GRID_SEED, guide=guide
        )
        picture = render(parts, drawn.samples, drawn.labels)
        if picture is not None:
            save_png(picture, RunDir(run_dir).step_picture(step))
            if events is not None:
                events.emit("on_samples", step=step, images=picture)

    main = distributed.is_main()
    trainer = Trainer(recipe, parts, device, run_dir, on_sample_grid=sample_grid, events=events)
    if state is not None:
        trainer.load_state_dict(state)
        console.print(f"resuming at step {trainer.state.step:,} of {trainer.steps:,}")
    elif resume:
        started = RunDir(run_dir).status.exists() or RunDir(run_dir).metrics.exists()
        if main:
            trainer.metrics.truncate_after(0)
        # a folder made for a job (sandbox run --launcher) starts here; one whose run stopped early starts over
        console.print(
            "no checkpoint yet: training again from step 0 in the same folder"
            if started
            else f"training from step 0 in {run_dir}"
        )
    if main:
        before = read_json(RunDir(run_dir).status) if resume else None
        if isinstance(before, dict) and before.get("status") == "training":  # its lock was free: it died
            console.print(
                f"the previous session (PID {before.get('pid', '?')} on {before.get('host', '?')}) died at or "
                f"after step {before.get('step', '?')} without stopping cleanly"
            )
        write_json(
            RunDir(run_dir).status,
            {"status": "training", "step": trainer.state.step, "pid": os.getpid(), "host": host()},
        )
    try:
        with progress(console) as bar:
            task = bar.add_task("train", total=trainer.steps, loss="-", speed="-")
            trained = trainer.fit(bar, task)
    except (Interrupted, Diverged) as exc:
        distributed.leaving()  # every process stops at this step; no signal may cut rank 0's report short
        if main:
            write_json(
                RunDir(run_dir).status,
                {
                    "status": "interrupted" if isinstance(exc, Interrupted) else "diverged",
                    "step": trainer.state.step,
                    "message": str(exc),
                    "checkpoint": str(trainer.last_checkpoint or ""),
                },
            )
        distributed.barrier()  # the others leave once rank 0 has recorded the stop
        if isinstance(exc, Interrupted):
            nproc = f" --nproc {distributed.world_size()}" if distributed.active() else ""
            exc.args = (f"{exc}. Resume with: sandbox run --resume {run_dir}{nproc}",)
        raise
    trainer.save_checkpoint(checkpoint.FINAL)
    if main:
        checkpoint.save_safetensors(
            RunDir(run_dir).ema,
            trainer.ema.model.state_dict(),
            {"step": str(trained.step), "recipe": recipe.to_yaml()},
        )
    distributed.barrier()  # the other processes leave once the final checkpoint is on disk
    return trained, trainer.ema_denoiser


def score(
    recipe: Recipe,
    parts: Parts,
    samples: torch.Tensor,
    device: torch.device,
    run_dir: Path,
    console: Console | None = None,
    labels: Optional[torch.Tensor] = None,
) -> dict[str, Any]:
    """The dataset's quality figures for the samples and for as many held-out real items, and ``eval.metrics``.

    Samples drawn for classes ``labels`` are scored by the dataset's ``evaluate_classes`` too, and the held-out
    items with their own labels (a classifier's conditional accuracy next to its accuracy on real data).

    FID and KID (:mod:`sandbox.engine.fid`) compare each set with the training split, whose reference statistics
    are cached beside the data, or in ``fid_reference/`` beside ``run_dir`` when the dataset names no folder.
    """
    real = real_heldout(parts, len(samples))
    quality: dict[str, Any] = {}
    if parts.data.evaluate is not None:
        quality = {"generated": parts.data.evaluate(samples), "real_heldout": parts.data.evaluate(real)}
    if labels is not None:
        real_labels = heldout_labels(parts, len(real))
        by_class: dict[str, dict[str, float]] = {
            "generated": {"class_spread": class_spread(samples, labels)},
            "real_heldout": {"class_spread": class_spread(real, real_labels)},
        }
        if parts.data.evaluate_classes is not None:
            by_class["generated"].update(parts.data.evaluate_classes(samples, labels))
            by_class["real_heldout"].update(parts.data.evaluate_classes(real, real_labels))
        quality = {side: {**quality.get(side, {}), **by_class[side]} for side in by_class}
    if recipe.eval.image_metrics:
        images = fid.image_metrics(
            recipe.eval.image_metrics,
            parts.data,
            recipe.to_dict()["dataset"],
            {"generated": samples, "real_heldout": real},
            device=device,
            fallback_dir=Path(run_dir).parent / fid.CACHE_FOLDER,
            console=console,
        )
        for side in ("generated", "real_heldout"):  # FID first: the figure sweeps rank by
            quality[side] = {**images.pop(side), **quality.get(side, {})}
        quality.update(images)
    return quality


def run_recipe(
    recipe: Recipe,
    *,
    console: Console | None = None,
    run_dir: Path | None = None,
    resume: bool = False,
    state: Optional[dict[str, Any]] = None,
) -> Path:
    """Run a validated recipe end to end (with the plugins that validated it) and return its run folder.

    With ``resume``, continue the run in ``run_dir`` from ``state``, its latest good checkpoint's
    (:func:`sandbox.engine.resume.resume_recipe` finds it), or from step 0 when it has none.

    The loggers ``run.loggers`` enables are built first (one that cannot start stops the run before any
    work) and receive the run's events (:mod:`sandbox.engine.events`), ``on_run_end`` also when the run stops.
    """
    events = enabled_loggers(recipe, main=distributed.is_main())
    try:
        with ExitStack() as held:  # the run folder's lock, from when it opens to the end
            return _run_recipe(recipe, events, held, console=console, run_dir=run_dir, resume=resume, state=state)
    except BaseException as exc:
        events.end_after(exc)
        raise


def _run_recipe(
    recipe: Recipe,
    events: RunEvents,
    held: ExitStack,
    *,
    console: Console | None,
    run_dir: Path | None,
    resume: bool,
    state: Optional[dict[str, Any]],
) -> Path:
    previous = state.get("threads") if state is not None else None
    device, parts, run_dir = prepare(
        recipe, run_dir, held, resume=resume, previous_threads=previous if isinstance(previous, int) else None
    )
    main = distributed.is_main()
    start_step = int(state["step"]) if state is not None else 0
    events.start(RunInfo(recipe.name, run_dir, recipe.to_dict(), start_step, distributed.world_size()))
    console = (console or default_console) if main else Console(quiet=True)  # rank 0 alone prints
    console.print(
        table(
            f"Recipe '{recipe.name}' on {device}"
            + (f" ({torch.get_num_threads()} CPU threads)" if device.type == "cpu" else ""),
            ["kind", "name", "provider", "parameters", "settings"],
            component_rows(recipe, parts),
        )
    )
    console.print(
        f"data: {len(parts.data.train):,} train, {len(parts.data.val):,} validation, shape "
        f"{tuple(parts.data.shape)}; run folder [bold]{run_dir}[/]"
    )
    if parts.data.description:
        console.print(f"data: {escape(parts.data.description)}", soft_wrap=True)
    if parts.exact_x0 is not None:  # an analytic denoiser: nothing to train
        trained = TrainState()
        denoise = exact_denoise(parts.exact_x0, parts.schedule, recipe.train.target, recipe.train.sigma_data)
        console.print("analytic denoiser: nothing to train")
    else:
        trained, denoise = train(
            recipe, parts, device, run_dir, console, resume=resume, state=state, events=events, guide=parts.guide
        )
    if not main:
        return run_dir  # rank 0 alone samples and scores
    console.print(f"sampling {recipe.eval.num_samples} with {recipe.components['sampler'][0]}...")
    drawn = draw(recipe, parts, denoise, device, recipe.eval.num_samples, recipe.run.seed + FINAL_SEED, console)
    samples = drawn.samples
    picture = render(parts, samples, drawn.labels)
    if picture is not None:
        save_png(picture, RunDir(run_dir).final_picture)
        events.emit("on_samples", step=trained.step, images=picture)
    saved = in_data_units(parts, samples)
    checkpoint.atomic_write(RunDir(run_dir).final_samples, lambda handle: torch.save(saved, handle))
    if drawn.labels is not None:
        labels = drawn.labels
        checkpoint.atomic_write(RunDir(run_dir).final_labels, lambda handle: torch.save(labels, handle))
    health = sample_health(samples, real_heldout(parts, len(samples)))
    if health["diverged"]:
        console.print(
            f"[bold red]warning:[/] the samples diverged: {health['finite_share']:.0%} finite, "
            f"{health['in_range_share']:.0%} within the data's range; their quality figures mean little"
        )
    summary = summarize_run(
        recipe,
        parts,
        device,
        run_dir,
        trained,
        score(recipe, parts, samples, device, run_dir, console, drawn.labels),
        sampling_record(drawn),
        grid=picture is not None,
    )
    if nll.wanted(recipe):
        summary["likelihood"] = nll.likelihood(recipe, parts, denoise, device, console)
    write_json(RunDir(run_dir).summary, {**summary, "sample_health": health})
    write_json(RunDir(run_dir).status, {"status": "finished", "step": trained.step})
    events.end("finished", {**summary, "sample_health": health})
    console.print(summary_table(recipe, summary))
    return run_dir


def summarize_run(
    recipe: Recipe,
    parts: Parts,
    device: torch.device,
    run_dir: Path,
    state: TrainState,
    quality: dict[str, Any],
    sampling: dict[str, Any],
    *,
    grid: bool,
) -> dict[str, Any]:
    """The contents of ``summary.json``."""
    trained = parts.net is not None
    saved = recipe.to_dict()  # parameters as the recipe writes them: an interpolated secret stays ${...}
    return {
        "name": recipe.name,
        "run_dir": str(run_dir),
        "device": str(device),
        "components": {
            kind: {
                "name": recipe.components[kind][0],
                "plugin": parts.components[kind].plugin,
                "provider": parts.components[kind].provider,
                "params": {key: value for key, value in saved[kind].items() if key != "name"},
            }
            for kind in KINDS
        },
        "denoiser_parameters": count_parameters(parts.net),
        "classes": list(parts.data.classes or []) if parts.classes else None,
        "train": {
            "steps": state.step,
            "final_train_loss": state.train_loss,
            "final_val_loss": state.val_loss,
            "final_val_loss_ema": state.val_loss_ema,
            "best_val_loss_ema": state.best_val_loss,
            "images_per_s": state.images_per_s,
            "wall_s": state.wall_s,
        },
        "sampling": {
            "sampler": recipe.components["sampler"][0],
            **({"guidance": saved["guidance"]} if "guidance" in saved else {}),
            **sampling,
        },
        "sample_quality": quality,
        "outputs": {
            "recipe": RunDir.RECIPE,
            "metrics": RunDir.METRICS if trained else None,
            "checkpoint": "checkpoints/final.pt" if trained else None,
            "ema": RunDir.EMA if trained else None,
            "samples": f"{RunDir.SAMPLES}/final.pt",
            "grid": "samples/final.png" if grid else None,
        },
    }


def guidance_text(section: dict[str, Any]) -> str:
    """``cfg (scale=2, ...)``: a guidance section in one line."""
    params = ", ".join(f"{k}={fmt(v)}" for k, v in section.items() if k != "name")
    return f"{section['name']} ({params})" if params else str(section["name"])


def summary_table(recipe: Recipe, summary: dict[str, Any]) -> Any:
    """The table printed at the end of a run."""
    train, sampling, quality = summary["train"], summary["sampling"], summary["sample_quality"]
    rows = [
        ["final train loss", train["final_train_loss"]],
        ["final validation loss (EMA)", train["final_val_loss_ema"]],
        ["images/s (train)", train["images_per_s"]],
        ["training time (s)", train["wall_s"]],
        ["sampler NFE per sample", sampling["nfe_per_sample"]],
        *([["guidance", guidance_text(sampling["guidance"])]] if sampling.get("guidance") else []),
        ["sampling time (s)", sampling["seconds"]],
    ]
    for metric, value in quality.get("generated", {}).items():
        rows.append(
            [f"{metric}: generated / real held-out", f"{fmt(value)} / {fmt(quality['real_heldout'].get(metric))}"]
        )
    rows += nll.rows(summary.get("likelihood", {}))
    rows.append(["run folder", summary["run_dir"]])
    if summary["outputs"]["grid"]:
        rows.append(["sample grid", str(Path(summary["run_dir"]) / summary["outputs"]["grid"])])
    return table(f"Summary of '{recipe.name}'", ["", "value"], rows)
