"""Class-conditional runs through the engine: labels in training, classes drawn, guidance, and every bad input
refused before any work with the key it is about."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from rich.console import Console

from sandbox import cli
from sandbox.engine.condition import class_spread, draw_labels, drop_labels, resolve_classes
from sandbox.errors import RecipeError
from sandbox.recipe import load_recipe
from sandbox.tools.sweep.plan import training_id

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"

SMALL_UNET = [
    "denoiser.channels=8",
    "denoiser.channel_mult=[1,2]",
    "denoiser.attention_resolutions=[]",
    "denoiser.groups=4",
]
SHORT = [
    "train.steps=4",
    "train.batch_size=16",
    "train.log_every=2",
    "train.val_every=0",
    "train.warmup_steps=1",
    "eval.val_batches=1",
    "eval.num_samples=20",
    "eval.sample_batch=10",
    "sampler.name=ddim",
    "sampler.steps=3",
    "run.threads=1",
    "run.device=cpu",
]
TINY_DIGITS = [*SMALL_UNET, *SHORT]


def conditional_run(tmp_path: Path, *overrides: str) -> Path:
    output = tmp_path / "runs"
    assert (
        cli.main(["run", str(QUICKSTART), *TINY_DIGITS, "train.conditional=true", f"run.output={output}", *overrides])
        == 0
    )
    (run_dir,) = output.iterdir()
    return run_dir


# ------------------------------------------------------------------------------------------------ pieces


def test_labels_are_drawn_in_balanced_blocks_one_per_class():
    labels = draw_labels(25, [3, 7, 1])
    assert labels.tolist() == [3] * 9 + [7] * 8 + [1] * 8
    assert draw_labels(4, [5]).tolist() == [5, 5, 5, 5]


def test_label_dropout_replaces_the_asked_share_with_the_null_class():
    torch.manual_seed(0)
    labels = torch.randint(0, 10, (20_000,))
    dropped = drop_labels(labels, 0.1, 10)
    share = float((dropped == 10).float().mean())
    assert abs(share - 0.1) < 4 * (0.1 * 0.9 / 20_000) ** 0.5  # four binomial standard errors
    kept = dropped != 10
    assert torch.equal(dropped[kept], labels[kept])
    assert torch.equal(drop_labels(labels, 0.0, 10), labels)


def test_classes_resolve_by_index_or_name_and_bad_ones_name_the_key():
    names = ["airplane", "automobile", "bird"]
    assert resolve_classes(None, names) == [0, 1, 2]
    assert resolve_classes(["bird", 0, "1"], names) == [2, 0, 1]
    with pytest.raises(RecipeError, match=r"'eval.classes': class 3 is out of range; expected 0 to 2"):
        resolve_classes([3], names)
    with pytest.raises(RecipeError, match=r"'eval.classes': unknown class 'cat'"):
        resolve_classes(["cat"], names)


def test_class_spread_is_the_root_mean_square_distance_to_each_class_mean():
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0], [10.0, 14.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # class 0: distances (1, 0), (1, 0) -> mean square per dimension 0.5; class 1: (0, 2) twice -> 2
    assert class_spread(x, labels) == pytest.approx((0.5**0.5 + 2.0**0.5) / 2)


def test_a_guidance_scale_sweep_shares_one_training():
    base = ["train.conditional=true", "guidance.name=cfg"]
    one = load_recipe(QUICKSTART, [*base, "guidance.scale=1"])
    three = load_recipe(QUICKSTART, [*base, "guidance.scale=3", "guidance.sigma_high=2"])
    other = load_recipe(QUICKSTART, [*base, "guidance.scale=1", "train.label_dropout=0.2"])
    assert training_id(one) == training_id(three) != training_id(other)


# ------------------------------------------------------------------------------------------------ unconditional


@pytest.mark.slow
def test_an_unconditional_run_is_bit_for_bit_what_it_was_before_conditioning(tmp_path, monkeypatch):
    """The quickstart at 30 steps, seeded: its EMA weights and samples as measured at df9eb97, before labels,
    guidance and class embeddings existed (sha-256 there; sums everywhere, to float64 rounding). The attention
    is computed as it was there, by ``F.scaled_dot_product_attention`` (training on the CPU computes it
    explicitly since, which rounds differently)."""
    from sandbox_plugins.denoisers import layers

    from sandbox.engine.run import run_recipe

    monkeypatch.setattr(layers, "EXPLICIT_TOKENS", 0)

    recipe = load_recipe(
        QUICKSTART,
        [
            "train.steps=30",
            "train.val_every=0",
            "train.log_every=10",
            "train.weighting=uniform",  # the quickstart's settings at df9eb97, where they have changed since
            "train.target=epsilon",
            "train.batch_size=128",
            "eval.num_samples=16",
            "sampler.name=ddim",
            "sampler.steps=5",
            "sampler.clip_x0=true",
            "run.channels_last=false",
            "run.threads=1",
            "run.device=cpu",
            f"run.output={tmp_path}",
        ],
    )
    run_dir = run_recipe(recipe, console=Console(quiet=True))
    weights = torch.load(run_dir / "checkpoints" / "final.pt", weights_only=True)["ema"]["model"]
    samples = torch.load(run_dir / "samples" / "final.pt", weights_only=True)
    assert len(weights) == 128 and not any("class" in key for key in weights)
    absolute = sum(float(v.double().abs().sum()) for v in weights.values())
    square = sum(float(v.double().pow(2).sum()) for v in weights.values())
    assert absolute == pytest.approx(26910.491976418634, rel=1e-6)
    assert square == pytest.approx(3656.8419447897854, rel=1e-6)
    assert float(samples.double().sum()) == pytest.approx(-59.396002888679504, rel=1e-5)
    if torch.backends.cpu.get_cpu_capability() == "AVX2":  # the machine the reference was measured on
        digest = hashlib.sha256()
        for key in sorted(weights):
            digest.update(key.encode())
            digest.update(weights[key].contiguous().numpy().tobytes())
        assert digest.hexdigest() == "0816cf4354c546cd35cda16c65fe522c9d1c444779add4b85c76c1d9f0d00c2d"
        assert (
            hashlib.sha256(samples.numpy().tobytes()).hexdigest()
            == "d58336393bbb73abc014d315eb2353bb14a7dd3fa4178a83b5fac123c142473d"
        )


# ------------------------------------------------------------------------------------------------ whole runs


@pytest.mark.slow
def test_a_conditional_run_trains_on_labels_and_reports_what_guided_sampling_cost(tmp_path):
    run_dir = conditional_run(tmp_path, "guidance.name=cfg", "guidance.scale=2")
    batched = conditional_run(tmp_path / "batched", "guidance.name=cfg", "guidance.scale=2", "guidance.batched=true")
    once = json.loads((batched / "summary.json").read_text())["sampling"]
    assert once["nfe_per_sample"] == 6 and once["forwards_per_batch"] == 3  # both estimates in one forward
    same = torch.load(batched / "samples" / "final.pt", weights_only=True)
    assert torch.allclose(same, torch.load(run_dir / "samples" / "final.pt", weights_only=True), atol=1e-5)
    weights = torch.load(run_dir / "checkpoints" / "final.pt", weights_only=True)["ema"]["model"]
    assert weights["class_embed.weight"].shape[0] == 11  # ten digits and the null class
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["classes"] == [str(d) for d in range(10)]
    sampling = summary["sampling"]
    assert sampling["guidance"]["name"] == "cfg" and sampling["guidance"]["scale"] == 2.0
    assert sampling["sampler_calls_per_sample"] == 3
    assert sampling["nfe_per_sample"] == 6  # conditional and unconditional at each of the 3 steps
    assert sampling["forwards_per_batch"] == 6  # ... in two forwards each: on a CPU two passes are the faster
    assert sampling["classes"] == {str(d): 2 for d in range(10)}
    labels = torch.load(run_dir / "samples" / "final_labels.pt", weights_only=True)
    assert labels.tolist() == [d for d in range(10) for _ in range(2)]
    generated, real = summary["sample_quality"]["generated"], summary["sample_quality"]["real_heldout"]
    assert 0.0 <= generated["class_accuracy"] <= 1.0 and real["class_accuracy"] > 0.85
    assert generated["class_spread"] > 0 and real["class_spread"] > 0

    # sampling again: one class, another scale, an interval; unguided sampling counts one evaluation per step
    assert cli.main(["sample", str(run_dir), "--classes", "3", "guidance.scale=1", "--num", "6"]) == 0
    assert cli.main(["sample", str(run_dir), "--classes", "all", "~guidance", "--num", "10"]) == 0
    one, unguided = sorted(p for p in (run_dir / "samples").iterdir() if p.is_dir())
    first = json.loads((one / "summary.json").read_text())
    assert first["classes"] == {"3": 6} and first["nfe_per_sample"] == 3
    assert torch.load(one / "labels.pt", weights_only=True).tolist() == [3] * 6
    second = json.loads((unguided / "summary.json").read_text())
    assert "guidance" not in second and second["nfe_per_sample"] == 3 and len(second["classes"]) == 10

    # autoguidance by the same run's final checkpoint (a guide as strong as the model: D_0 = D_1, so any
    # scale gives the model's own samples) costs two forwards per step: two models cannot share one
    assert cli.main(["sample", str(run_dir), "--guide", str(run_dir / "checkpoints" / "final.pt"), "--num", "10"]) == 0
    guided = max((p for p in (run_dir / "samples").iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    auto = json.loads((guided / "summary.json").read_text())
    assert auto["guidance"]["name"] == "autoguidance" and auto["nfe_per_sample"] == 6
    plain = torch.load(unguided / "samples.pt", weights_only=True)
    assert torch.allclose(torch.load(guided / "samples.pt", weights_only=True), plain, atol=1e-5)


# ------------------------------------------------------------------------------------------------ bad input


def refused(capsys, *args: str) -> str:
    assert cli.main(list(args)) == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.conditional=true", "eval.classes=[10]"], "'eval.classes': class 10 is out of range"),
        (["train.conditional=true", "eval.classes=[ten]"], "'eval.classes': unknown class 'ten'"),
        (["train.conditional=true", "guidance.name=cfg", "guidance.scale=.nan"], "'guidance.scale'"),
        (["train.conditional=true", "guidance.name=cfg", "guidance.scale=.inf"], "'guidance.scale'"),
        (["guidance.name=cfg"], "'guidance.name': 'cfg' steers a class-conditional model"),
        (["eval.classes=[3]"], "'eval.classes'"),
        (["guidance.name=autoguidance", "guidance.guide=/no/such/run"], "'guidance.guide': '/no/such/run' does not"),
        (["guidance.name=autoguidance"], "'guidance.guide'"),
    ],
)
def test_bad_conditional_input_is_one_message_with_its_key_before_any_work(tmp_path, capsys, overrides, message):
    output = tmp_path / "runs"
    err = refused(capsys, "run", str(QUICKSTART), *TINY_DIGITS, f"run.output={output}", *overrides)
    assert message in " ".join(err.split()) and "Traceback" not in err
    assert not output.exists() or not any(output.iterdir())  # refused before the run folder exists


def test_a_conditional_run_on_data_without_labels_is_refused(tiny_recipe, capsys):
    err = " ".join(refused(capsys, "run", str(tiny_recipe), "train.conditional=true").split())
    assert "recipe key 'train.conditional': True" in err and "dataset 'toy2d'" in err and "has no labels" in err
    assert not (tiny_recipe.parent / "runs").exists()


def test_a_denoiser_that_cannot_take_a_class_is_refused_naming_its_plugin(tmp_path, capsys):
    plugin = tmp_path / "plain_denoiser.py"
    plugin.write_text(
        "import torch\n"
        "from sandbox import hookimpl\n\n"
        "class Plain(torch.nn.Module):\n"
        "    def __init__(self, shape):\n"
        "        super().__init__()\n"
        "        self.scale = torch.nn.Parameter(torch.ones(()))\n\n"
        "    def forward(self, x, c_noise):\n"
        "        return self.scale * x\n\n"
        "def build(params, shape):\n"
        "    return Plain(shape)\n\n"
        "@hookimpl\n"
        "def register_denoisers(register):\n"
        "    register('plain', build)\n"
    )
    common = [*SHORT, f"run.output={tmp_path / 'runs'}", f"plugins=[{plugin}]", "denoiser=plain"]
    err = refused(capsys, "run", str(QUICKSTART), *common, "train.conditional=true")
    text = " ".join(err.split())
    assert "denoiser 'plain' from local:" in text and "cannot take a condition" in text
    assert "num_classes" in text and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_guide_of_other_data_is_refused_naming_the_key(tmp_path, capsys, tiny_recipe):
    assert cli.main(["run", str(tiny_recipe), "run.threads=1"]) == 0
    (toy_run,) = (tiny_recipe.parent / "runs").iterdir()
    output = tmp_path / "digits-runs"
    err = refused(
        capsys,
        "run",
        str(QUICKSTART),
        *TINY_DIGITS,
        f"run.output={output}",
        "guidance.name=autoguidance",
        f"guidance.guide={toy_run}",
    )
    text = " ".join(err.split())
    assert "'guidance.guide'" in text and "shape (2,)" in text and "(1, 8, 8)" in text
