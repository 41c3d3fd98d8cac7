"""Run events and loggers: the hooks a run calls, in order, on the loggers ``run.loggers`` enables only; a failing
logger is reported once and the run goes on; the TensorBoard logger's event files read back."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest

from sandbox import hookimpl, hookspecs
from sandbox.engine.events import EVENTS, Logger, RunEvents, enabled_loggers
from sandbox.engine.run import run_recipe
from sandbox.errors import Diverged, RecipeError, RegistryError
from sandbox.protocols import RunInfo
from sandbox.recipe import load_recipe
from sandbox.registry import load_registry, use_registry
from sandbox.testing import register_plugin

PLUGINS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
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


def readme_logger() -> types.ModuleType:
    """The logger example of docs/plugins.md (the Python block that registers loggers), as a module."""
    blocks = re.findall(r"```python\n(.*?)```", PLUGINS_PAGE.read_text(), flags=re.S)
    (block,) = [b for b in blocks if "register_loggers" in b]
    module = types.ModuleType("readme_csv_logger")
    sys.modules[module.__name__] = module  # its dataclass looks the module up by name
    exec(compile(block, "docs/plugins.md", "exec"), module.__dict__)
    return module


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
run: {{device: cpu, seed: 0, output: {tmp / "runs"}, loggers: [recorder, broken, csv{", tensorboard" * tensorboard}]}}
""")
    CALLS.clear()
    plugins = {"test-loggers": LoggerPlugin(), "readme-csv": readme_logger()}
    with use_registry(load_registry(plugins)), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_dir = run_recipe(load_recipe(recipe_path))
    return {"run_dir": run_dir, "warnings": [str(w.message) for w in caught], "calls": dict(CALLS)}


@pytest.mark.slow
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


def test_the_readme_logger_writes_its_csv(logged_run):
    lines = [json.loads(line) for line in (logged_run["run_dir"] / "metrics.jsonl").read_text().splitlines()]
    rows = (logged_run["run_dir"] / "val_loss.csv").read_text().splitlines()
    assert rows == ["step,val_loss_ema"] + [f"{x['step']},{x['val_loss_ema']}" for x in lines if "val_loss_ema" in x]
    assert len(rows) == 3


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


# ------------------------------------------------------------------------------ the example third-party loggers

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def install_example(name: str, module: str, tmp: Path) -> dict[str, str]:
    """pip-install examples/``name`` offline into a folder (its tracker must already be importable: ``module``) and
    return the environment that has it, as if installed beside the sandbox; skip when the tracker is missing."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install {EXAMPLES.name}/{name} installs it with the example)")
    source = tmp / name
    shutil.copytree(EXAMPLES / name, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = tmp / "site"
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet"]
    result = subprocess.run(
        [*pip, "--disable-pip-version-check", "--target", str(site), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        pytest.skip(f"{name} cannot be installed offline here: {result.stderr.strip().splitlines()[-1:]}")
    env = {k: v for k, v in os.environ.items() if k not in ("SANDBOX_PLUGINS", "SANDBOX_TRACE")}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")])), OMP_NUM_THREADS="2")
    return env


def run_with_logger(tmp: Path, env: dict[str, str], logger: str) -> Path:
    """``sandbox run`` of a tiny recipe with ``run.loggers=[logger]`` in a subprocess; returns the run folder."""
    recipe = tmp / "tracked.yaml"
    recipe.write_text(f"""
dataset: {{name: toy2d, shape: moons, n_train: 128, n_val: 32}}
schedule: {{name: linear, num_steps: 100}}
denoiser: {{name: mlp, hidden: 16, layers: 2}}
sampler: {{name: ddim, steps: 4}}
train: {{steps: 10, batch_size: 32, log_every: 5, val_every: 10, sample_every: 5, warmup_steps: 2}}
eval: {{val_batches: 1, num_samples: 16, sample_batch: 16, grid_samples: 16}}
run: {{device: cpu, seed: 0, output: {tmp / "runs"}}}
""")
    command = [sys.executable, "-m", "sandbox", "run", str(recipe), f"run.loggers=[{logger}]"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "warning" not in result.stderr, result.stderr  # no logger failed
    (run_dir,) = (tmp / "runs").iterdir()
    return run_dir


def metrics_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_mlflow_example_logs_a_run_to_a_local_file_store(tmp_path):
    env = install_example("sandbox-mlflow", "mlflow", tmp_path)
    env["MLFLOW_ALLOW_FILE_STORE"] = "true"  # MLflow 3 asks for the flag to use a file: store
    store = f"file:{tmp_path / 'mlruns'}"
    run_dir = run_with_logger(tmp_path, env, f'{{name: mlflow, tracking_uri: "{store}", experiment: tests}}')

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name
    assert (run_dir / "mlflow_run_id").read_text().strip() == run.info.run_id
    assert run.data.params["train.steps"] == "10" and run.data.params["denoiser.name"] == "mlp"
    history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert history == [(line["step"], pytest.approx(line["train_loss"])) for line in metrics_lines(run_dir)]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert run.data.metrics["final.train.final_val_loss_ema"] == pytest.approx(summary["train"]["final_val_loss_ema"])
    assert run.data.tags["sandbox.engine.checkpoint"].endswith("final.pt")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    samples = {a.path for a in client.list_artifacts(run.info.run_id, "samples")}
    assert "recipe.yaml" in artifacts and samples == {"samples/step_000005.png", "samples/step_000010.png"}


def wandb_records(path: Path) -> list:
    """The records of a W&B offline run file (``run-ID.wandb``: a LevelDB-style log of 32 KiB blocks whose records
    have a 7-byte header: CRC, length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4), as protobuf messages."""
    from wandb.proto import wandb_internal_pb2

    data, records, pos, partial = path.read_bytes(), [], 7, b""  # 7: the ':W&B' header, magic and version
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        partial, pos = partial + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:
            break
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(partial)
            records.append(record)
            partial = b""
    return records


@pytest.mark.slow
def test_wandb_example_logs_an_offline_run(tmp_path):
    env = install_example("sandbox-wandb", "wandb", tmp_path)
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DISABLE_GIT="true", HOME=str(tmp_path))
    run_dir = run_with_logger(tmp_path, env, "{name: wandb, project: tests, tags: [ci]}")

    (offline,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    assert offline.stem == "run-" + (run_dir / "wandb_run_id").read_text().strip()
    records = wandb_records(offline)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.display_name == run_dir.name and run.project == "tests" and list(run.tags) == ["ci"]
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["train"]["steps"] == 10 and config["denoiser"]["name"] == "mlp"
    history = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            history[row["_step"]] = row
    assert [(s, r["train_loss"]) for s, r in history.items() if "train_loss" in r] == [
        (line["step"], pytest.approx(line["train_loss"])) for line in metrics_lines(run_dir)
    ]
    assert [s for s, r in history.items() if "samples/path" in r] == [5, 10]  # the grid at 5, the final samples
    summary = {}
    for record in records:
        if record.WhichOneof("record_type") == "summary":
            summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.summary.update})
    final = json.loads((run_dir / "summary.json").read_text())["train"]["final_val_loss_ema"]
    assert summary["final/train/final_val_loss_ema"] == pytest.approx(final) and summary["status"] == "finished"
    assert [r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"] == [0]
