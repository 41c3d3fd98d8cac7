"""The fast paths of the training loop: no host reads per step, precision modes, compile, channels-last,
and batches of a stored split drawn on the device."""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import pytest
import torch
from rich.console import Console

from sandbox import cli
from sandbox.engine import acceleration, checkpoint
from sandbox.engine.batches import DataPosition, DeviceBatches, LoaderBatches, keep_on_device
from sandbox.engine.build import build_parts
from sandbox.engine.run import run_recipe
from sandbox.engine.training import Trainer
from sandbox.errors import RecipeError
from sandbox.recipe import load_recipe

TOY = """
dataset: {{name: toy2d, shape: moons, n_train: 256, n_val: 64}}
schedule: {{name: cosine}}
denoiser: {{name: mlp, hidden: 32, layers: 2}}
sampler: {{name: ddim, steps: 4}}
train: {{steps: {steps}, batch_size: 32, log_every: 5, val_every: 0, warmup_steps: 2, target: v}}
eval: {{val_batches: 1, num_samples: 8, sample_batch: 8, grid_samples: 8}}
run: {{device: cpu, seed: 0, threads: 1, output: {output}}}
"""
IMAGES = """
dataset: {{name: digits}}
schedule: {{name: cosine}}
denoiser: {{name: unet, channels: 16, channel_mult: [1, 2], num_res_blocks: 1, attention_resolutions: [4], groups: 8}}
sampler: {{name: ddim, steps: 4}}
train: {{steps: {steps}, batch_size: 16, log_every: 5, val_every: 0, warmup_steps: 2}}
eval: {{val_batches: 1, num_samples: 8, sample_batch: 8, grid_samples: 8}}
run: {{device: cpu, seed: 0, threads: 1, output: {output}}}
"""


def image_recipe(tmp_path: Path, steps: int = 10, overrides: tuple[str, ...] = (), text: str = IMAGES):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "images.yaml"
    path.write_text(text.format(steps=steps, output=tmp_path / "runs"))
    return load_recipe(path, list(overrides))


def trainer(tmp_path: Path, *overrides: str, text: str = TOY) -> Trainer:
    recipe = image_recipe(tmp_path, overrides=overrides, text=text)
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    torch.manual_seed(recipe.run.seed)  # as sandbox run does
    return Trainer(recipe, build_parts(recipe), torch.device("cpu"), run_dir)


class HostReads:
    """Counts every read of a tensor's value on the host (what waits for a GPU)."""

    NAMES = ("item", "__float__", "__int__", "__bool__", "tolist")

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.count = 0
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, **kwargs):
                self.count += 1
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


def test_a_training_step_never_reads_a_tensor_on_the_host(tmp_path, monkeypatch):
    train = trainer(tmp_path)
    batches = train.batches()
    x0, _ = next(batches)
    train.step(x0)  # the first step may set things up
    reads = HostReads(monkeypatch)
    losses = [train.step(*next(batches)) for _ in range(3)]
    assert reads.count == 0
    assert all(loss.ndim == 0 and loss.requires_grad is False for loss in losses)


def test_the_loop_reads_losses_only_where_it_reports(tmp_path, monkeypatch):
    train = trainer(tmp_path)
    reads: list[int] = []
    original = Trainer._read_losses
    monkeypatch.setattr(Trainer, "_read_losses", lambda self, step: (reads.append(step), original(self, step)))
    state = train.fit()
    assert reads == [5, 10] and state.step == 10  # log_every 5; validation and the end fall on step 10


def test_a_non_finite_loss_stops_at_the_next_read_before_anything_is_written(tmp_path, monkeypatch):
    train = trainer(tmp_path)
    original = Trainer.step
    monkeypatch.setattr(
        Trainer, "step", lambda self, x0: original(self, x0) * (float("nan") if self.state.step == 6 else 1.0)
    )
    with pytest.raises(Exception, match="training diverged: the loss became nan between step 6 and step 10"):
        train.fit()
    lines = (train.run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [5]


def test_the_loss_sum_does_not_depend_on_reads_in_between(tmp_path):
    """The interval's sum is kept in float64 on the device, so a checkpoint reading it mid-interval (as a
    resumed run's does) changes nothing in the logged mean."""
    plain = trainer(tmp_path / "a")
    plain.fit()
    read = trainer(tmp_path / "b", "train.checkpoint_every=3")
    read.fit()
    assert read.state.train_loss == plain.state.train_loss


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_trains_on_the_cpu_and_checkpoints_fp32_weights(precision, tmp_path, monkeypatch):
    from sandbox.engine import acceleration

    monkeypatch.setattr(acceleration, "cpu_flags", lambda: frozenset())  # a CPU without bf16 or fp16 units
    with pytest.warns(UserWarning, match="fast only where the CPU"):
        train = trainer(tmp_path, f"run.precision={precision}", "train.steps=4", "train.log_every=2")
    train.fit()
    assert train.scaler.is_enabled() == (precision == "fp16")
    state = train.state_dict()
    assert all(v.dtype == torch.float32 for v in state["model"].values() if v.is_floating_point())
    assert torch.isfinite(torch.tensor(train.state.train_loss))
    if precision == "fp16":
        assert state["grad_scaler"]["scale"] > 0  # the scaler's state is saved and restored with the rest
        fresh = trainer(tmp_path, "run.precision=fp16")
        fresh.load_state_dict(state)
        assert fresh.scaler.get_scale() == train.scaler.get_scale()


def test_channels_last_computes_the_same_and_saves_plain_checkpoints(tmp_path):
    contiguous = trainer(tmp_path / "a", "run.channels_last=false", text=IMAGES)
    last = trainer(tmp_path / "b", "run.channels_last=true", text=IMAGES)
    conv = next(m for m in last.net.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x0, _ = next(last.batches())
    assert x0.is_contiguous(memory_format=torch.channels_last)
    torch.manual_seed(0)
    a = contiguous.step(*next(contiguous.batches()))
    torch.manual_seed(0)
    b = last.step(x0)
    assert float(a) == pytest.approx(float(b), rel=1e-5)
    path = last.save_checkpoint()
    assert set(checkpoint.load(path)["model"]) == set(contiguous.net.state_dict())


@pytest.mark.slow
def test_compile_keeps_plain_weights_and_computes_the_same(tmp_path, monkeypatch):
    """The engine's compile wiring, with dynamo's graph capture and an eager backend (no C++ toolchain)."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    compiled = trainer(tmp_path / "a", "run.compile=true", "train.steps=3")
    plain = trainer(tmp_path / "b", "train.steps=3")
    assert compiled.compiled is not compiled.net
    torch.manual_seed(0)
    compiled.fit()
    torch.manual_seed(0)
    plain.fit()
    assert compiled.state.train_loss == pytest.approx(plain.state.train_loss, rel=1e-4)
    assert set(compiled.state_dict()["model"]) == set(plain.state_dict()["model"])  # no _orig_mod. prefix


def test_a_compiler_failure_is_one_message_naming_the_key(tmp_path, monkeypatch, capsys):
    import torch._dynamo.exc

    def failing(module):
        def call(*args, **kwargs):
            raise torch._dynamo.exc.BackendCompilerFailed(lambda: None, RuntimeError("no C++ compiler found"), None)

        return call

    monkeypatch.setattr(torch, "compile", failing)
    path = tmp_path / "images.yaml"
    path.write_text(IMAGES.format(steps=2, output=tmp_path / "runs"))
    assert cli.main(["run", str(path), "run.compile=true"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "recipe key 'run.compile': True, but torch.compile cannot compile the denoiser" in err
    assert "set run.compile=false" in err and "Traceback" not in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_steps_never_synchronise_and_compile_with_inductor(tmp_path):
    recipe = image_recipe(tmp_path, overrides=("run.device=cuda", "run.precision=bf16", "run.compile=true"))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    train = Trainer(recipe, build_parts(recipe), torch.device("cuda"), run_dir)
    assert isinstance(train.batch_source, DeviceBatches) and train.channels_last
    batches = train.batches()
    for _ in range(3):  # compile and warm up
        train.step(*next(batches))
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            train.step(*next(batches))
    finally:
        torch.cuda.set_sync_debug_mode("default")


# ----------------------------------------------------------------------------------------- batches


def stored_images(n: int = 10, flip: bool = True):
    from sandbox_plugins.datasets.items import Uint8Images

    images = torch.arange(n * 3 * 2 * 2, dtype=torch.int64).reshape(n, 3, 2, 2).remainder(256).to(torch.uint8)
    return Uint8Images(images, torch.arange(n), flip=flip)


def test_device_batches_visit_every_item_once_per_epoch_and_resume_mid_epoch():
    split = stored_images(n=10, flip=False)
    source = DeviceBatches(split, 3, torch.Generator().manual_seed(0), torch.device("cpu"), seed=0)
    data = DataPosition()
    batches = source(data)
    epoch = [next(batches) for _ in range(3)]  # 10 // 3 batches, the last partial one dropped
    seen = torch.cat(epoch)[:, 0, 0, 0]
    assert len(set(seen.tolist())) == 9 and data.epoch == 0 and data.position == 3
    following = next(batches)
    assert data.epoch == 1 and data.position == 1
    # a new source continuing from a copy of the position draws exactly what the first one draws next
    saved = DataPosition(data.epoch, data.position, data.epoch_state.clone())
    again = DeviceBatches(split, 3, torch.Generator().manual_seed(123), torch.device("cpu"), seed=0)(saved)
    assert torch.equal(next(again), next(batches))
    assert not torch.equal(following, epoch[0])


def test_decoding_a_stored_batch_matches_item_access_and_flips_half():
    split = stored_images(n=400, flip=True)
    decoded = split.decode(split.stored(), torch.Generator().manual_seed(0))
    plain = torch.stack([stored_images(n=400, flip=False)[i] for i in range(400)])
    same = (decoded == plain).flatten(1).all(1)
    mirrored = (decoded == plain.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 150 < int(mirrored.sum()) < 250  # each image mirrored with probability 1/2


def test_a_stored_split_is_batched_on_the_device_unless_the_recipe_says_otherwise(tmp_path):
    assert isinstance(trainer(tmp_path).batch_source, DeviceBatches)
    assert isinstance(trainer(tmp_path, "run.data_on_device=false").batch_source, LoaderBatches)
    with pytest.raises(RecipeError, match=r"recipe key 'run.data_on_device': True; expected a dataset whose train"):
        keep_on_device([torch.zeros(2)], torch.device("cpu"), True)


@pytest.mark.slow
def test_a_run_with_the_dataloader_and_one_on_the_device_learn_alike(tmp_path):
    """Same recipe, both batch sources: both runs learn (the data orders differ, the data does not)."""
    losses = {}
    for setting in ("true", "false"):
        recipe = image_recipe(tmp_path / setting, steps=40, overrides=(f"run.data_on_device={setting}",), text=TOY)
        run = run_recipe(recipe, console=Console(record=True))
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        losses[setting] = [r["train_loss"] for r in records if "train_loss" in r]
    for curve in losses.values():
        assert curve[-1] < 0.9 * curve[0], curve
    assert losses["true"][-1] == pytest.approx(losses["false"][-1], rel=0.2), losses


@pytest.mark.parametrize(
    ("precision", "flags", "native"),
    [
        ("bf16", {"avx2", "avx512f"}, False),
        ("bf16", {"avx512f", "avx512_bf16"}, True),
        ("bf16", {"amx_tile", "amx_bf16"}, True),
        ("bf16", {"avx512_fp16"}, False),
        ("fp16", {"avx512_bf16", "amx_bf16"}, False),
        ("fp16", {"avx512_fp16"}, True),
        ("fp16", {"amx_fp16"}, True),
        ("bf16", set(), False),
    ],
)
def test_the_cpu_computes_natively_in_a_precision_by_its_reported_flags(precision, flags, native):
    assert acceleration.cpu_computes_natively(precision, flags) is native


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_on_the_cpu_warns_only_where_the_cpu_lacks_it(precision, monkeypatch):
    monkeypatch.setattr(acceleration, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    with pytest.warns(UserWarning, match=f"run.precision={precision} on the CPU is fast only where"):
        acceleration.autocast(precision, torch.device("cpu"))
    native = {"bf16": "amx_bf16", "fp16": "avx512_fp16"}[precision]
    monkeypatch.setattr(acceleration, "cpu_flags", lambda: frozenset({"avx2", "avx512f", native}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with acceleration.autocast(precision, torch.device("cpu")):
            assert torch.get_autocast_dtype("cpu") == acceleration.AUTOCAST_DTYPES[precision]


def test_the_cpu_flags_are_a_set_of_names_this_cpu_reports():
    flags = acceleration.cpu_flags()
    assert isinstance(flags, frozenset) and all(isinstance(flag, str) and " " not in flag for flag in flags)
    if Path("/proc/cpuinfo").exists() and "flags" in Path("/proc/cpuinfo").read_text():
        assert "fpu" in flags or "sse2" in flags  # an x86 CPU lists its basic flags
