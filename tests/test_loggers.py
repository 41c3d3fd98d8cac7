"""Run events and loggers: the hooks a run calls, in order, on the loggers ``run.loggers`` enables only; a failing
logger is reported once and the run goes on; the TensorBoard logger's event files read back."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import pytest

from sandbox import hookimpl, hookspecs
from sandbox.errors import RecipeError, RegistryError
from sandbox.events import EVENTS, Logger, RunEvents, enabled_loggers
from sandbox.protocols import RunInfo
from sandbox.recipe import load_recipe
from sandbox.run import run_recipe
from sandbox.testing import register_plugin
from sandbox.training import Diverged

CALLS: dict[str, list[tuple]] = {}  # logger name -> the events it received


class Recorder:
    """Records every event it receives."""

    def __init__(self, name: str) -> None:
        self.calls = CALLS.setdefault(name, [])

    @hookimpl
    def on_run_start(self, run):
        self.calls.append(("on_run_start", run))

    @hookimpl
    def on_metrics(self, run, step, record):
        self.calls.append(("on_metrics", step, record))

    @hookimpl
    def on_samples(self, step, images):
        self.calls.append(("on_samples", step, tuple(images.shape), float(images.min()), float(images.max())))

    @hookimpl
    def on_checkpoint(self, path):
        self.calls.append(("on_checkpoint", Path(path).name, Path(path).is_file()))

    @hookimpl
    def on_run_end(self, run, status, summary):
        self.calls.append(("on_run_end", status, summary))


class Broken(Recorder):
    """Raises in every metrics event."""

    @hookimpl
    def on_metrics(self, run, step, record):
        self.calls.append(("on_metrics", step, record))
        raise ConnectionError("tracker unreachable")


class Misspelled:
    @hookimpl
    def on_metric(self, step, record):  # not a run-event hook
        pass


class LoggerPlugin:
    @hookimpl
    def register_loggers(self, register):
        register("recorder", lambda params: Recorder("recorder"))
        register("broken", lambda params: Broken("broken"))
        register("unused", lambda params: Recorder("unused"))  # registered, never enabled
        register("misspelled", lambda params: Misspelled())
        register("undecorated", lambda params: object())


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """One tiny run with the recorder and the broken logger enabled (and TensorBoard, when installed)."""
    tmp = tmp_path_factory.mktemp("logged")
    recipe_path = tmp / "logged.yaml"
    tensorboard = importlib.util.find_spec("tensorboard") is not None
    recipe_path.write_text(f"""
dataset: {{name: toy2d, shape: moons, n_train: 256, n_val: 64}}
schedule: {{name: linear, num_steps: 100}}
denoiser: {{name: mlp, hidden: 16, layers: 2}}
sampler: {{name: ddim, steps: 5}}
train: {{steps: 20, batch_size: 64, log_every: 5, val_every: 10, sample_every: 10, checkpoint_every: 10}}
eval: {{val_batches: 1, num_samples: 32, sample_batch: 32, grid_samples: 16}}
run: {{device: cpu, seed: 0, output: {tmp / "runs"}, loggers: [recorder, broken{", tensorboard" * tensorboard}]}}
""")
    CALLS.clear()
    with register_plugin(LoggerPlugin(), name="test-loggers"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_dir = run_recipe(load_recipe(recipe_path))
    return {"run_dir": run_dir, "warnings": [str(w.message) for w in caught], "calls": dict(CALLS)}


def test_a_run_calls_every_event_in_order_with_what_it_wrote(logged_run):
    run_dir, calls = logged_run["run_dir"], logged_run["calls"]["recorder"]
    assert calls[0][0] == "on_run_start" and calls[-1][0] == "on_run_end"
    run: RunInfo = calls[0][1]
    assert run.run_dir == run_dir and run.name == "logged" and run.start_step == 0 and run.world_size == 1
    assert run.recipe["run"]["loggers"][0] == "recorder" and run.recipe["train"]["steps"] == 20
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(c[1], c[2]) for c in calls if c[0] == "on_metrics"] == [
        (line.pop("step"), line) for line in lines
    ]  # metrics.jsonl, line by line
    samples = [c for c in calls if c[0] == "on_samples"]
    assert [s[1] for s in samples] == [10, 20]  # the grid at step 10, then the final samples
    assert all(len(s[2]) == 3 and 0.0 <= s[3] <= s[4] <= 1.0 for s in samples)
    assert [c[1:] for c in calls if c[0] == "on_checkpoint"] == [("step_000010.pt", True), ("final.pt", True)]
    _, status, summary = calls[-1]
    assert status == "finished" and summary == json.loads((run_dir / "summary.json").read_text())


def test_a_failing_logger_is_reported_once_and_the_run_goes_on(logged_run):
    broken = logged_run["calls"]["broken"]
    lines = (logged_run["run_dir"] / "metrics.jsonl").read_text().splitlines()
    assert sum(c[0] == "on_metrics" for c in broken) == len(lines) == 4  # called every time, though it raised
    assert broken[-1][1] == "finished"  # and told of the end
    reports = [w for w in logged_run["warnings"] if "logger 'broken'" in w]
    assert len(reports) == 1, logged_run["warnings"]
    assert "from test-loggers" in reports[0] and "on_metrics" in reports[0] and "tracker unreachable" in reports[0]
    assert (logged_run["run_dir"] / "summary.json").exists()


def test_a_logger_that_is_not_enabled_is_not_called(logged_run, tiny_recipe):
    assert "unused" not in logged_run["calls"]
    assert enabled_loggers(load_recipe(tiny_recipe), main=True).loggers == {}


def test_tensorboard_event_file_holds_scalars_grids_and_recipe(logged_run):
    if importlib.util.find_spec("tensorboard") is None:
        pytest.skip("tensorboard is not installed: pip install 'diffusion-sandbox[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = logged_run["run_dir"]
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for key in ("train_loss", "val_loss_ema", "lr"):
        expected = [(line["step"], line[key]) for line in lines if key in line]
        assert [(e.step, e.value) for e in events.Scalars(key)] == [(s, pytest.approx(v)) for s, v in expected]
    assert [e.step for e in events.Images("samples")] == [10, 20]
    recipe = events.Tensors("recipe/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "loggers:" in recipe and "steps: 20" in recipe
    summary = json.loads((run_dir / "summary.json").read_text())
    final = events.Scalars("final/train/final_val_loss_ema")
    assert final[0].value == pytest.approx(summary["train"]["final_val_loss_ema"])


def _events(*names: str) -> RunEvents:
    with register_plugin(LoggerPlugin(), name="test-loggers") as registry:
        built = [Logger(f"run.loggers[{i}]", registry.get("logger", n), None) for i, n in enumerate(names)]
        return RunEvents([Logger(b.key, b.component, b.component.build()) for b in built])


def test_a_stopped_run_ends_with_its_status(tmp_path):
    CALLS.clear()
    events = _events("recorder")
    events.start(RunInfo("r", tmp_path, {}))
    events.end_after(Diverged("training diverged at step 3"))
    events.end_after(RuntimeError("a second end is not reported"))
    events.emit("on_metrics", step=4, record={"train_loss": 1.0})  # after the end: nothing
    assert [c[0] for c in CALLS["recorder"]] == ["on_run_start", "on_run_end"]
    assert CALLS["recorder"][-1][1:] == ("diverged", {"step": None, "message": "training diverged at step 3"})


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("misspelled", "recipe key 'run.loggers[0]': logger 'misspelled' from test-loggers is not a valid logger"),
        ("undecorated", "implements no run-event hook (on_run_start, on_metrics"),
    ],
)
def test_an_invalid_logger_stops_before_any_work(name, expected):
    with pytest.raises(RecipeError) as info:
        _events(name)
    assert expected in str(info.value)


def test_loggers_are_checked_against_the_registry_with_their_key(tiny_recipe):
    with register_plugin(LoggerPlugin(), name="test-loggers"), pytest.raises(RegistryError) as info:
        load_recipe(tiny_recipe, ["run.loggers=[recorder, tensorbord]"])
    message = str(info.value)
    assert "recipe key 'run.loggers[1]'" in message and "unknown logger 'tensorbord'" in message
    assert "Did you mean 'tensorboard'?" in message
    with pytest.raises(RecipeError, match=r"run\.loggers\[0\]\.flush_secs': 0"):
        load_recipe(tiny_recipe, ["run.loggers=[{name: tensorboard, flush_secs: 0}]"])
    recipe = load_recipe(tiny_recipe, ["run.loggers=tensorboard"])
    assert recipe.to_dict()["run"]["loggers"] == [{"name": "tensorboard", "log_dir": "tensorboard", "flush_secs": 30}]
    assert [name for name, _ in load_recipe(recipe_yaml(tiny_recipe, recipe)).loggers] == ["tensorboard"]


def recipe_yaml(tmp: Path, recipe) -> Path:
    """The resolved recipe written out and read again, as a resumed run does."""
    path = tmp.parent / "resolved.yaml"
    path.write_text(recipe.to_yaml())
    return path


def test_the_hooks_are_called_only_in_the_main_process(tiny_recipe):
    with register_plugin(LoggerPlugin(), name="test-loggers"):
        recipe = load_recipe(tiny_recipe, ["run.loggers=[recorder]"])
        assert enabled_loggers(recipe, main=False).loggers == {}
        assert list(enabled_loggers(recipe, main=True).loggers) == ["logger:recorder"]
    assert set(EVENTS) == {name for name in dir(hookspecs) if name.startswith("on_")}
