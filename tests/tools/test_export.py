"""``sandbox export RUN_DIR --format diffusers OUT``: diffusers' UNet and scheduler give the sandbox's numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from sandbox_plugins.denoisers.diffusers_export import to_diffusers
from sandbox_plugins.denoisers.params import UNetParams
from sandbox_plugins.denoisers.unet import UNet

from sandbox import cli
from sandbox.engine.build import build_component
from sandbox.errors import ParameterError, RecipeError
from sandbox.recipe import load_recipe
from sandbox.tools.export import scheduler_config

TINY = """
dataset: {{name: digits}}
schedule: {schedule}
denoiser: {denoiser}
sampler: {{name: ddpm, steps: 3}}
train: {{steps: 2, batch_size: 16, log_every: 1, val_every: 0, sample_every: 0, warmup_steps: 1, target: {target}}}
eval: {{val_batches: 1, num_samples: 4, sample_batch: 4}}
run: {{device: cpu, seed: 0, threads: 1, output: {output}}}
"""
UNET = "{name: unet, channels: 16, channel_mult: [1, 2], attention_resolutions: [4], groups: 8, num_res_blocks: 1}"


def write_recipe(folder: Path, schedule="{name: linear}", denoiser=UNET, target="epsilon") -> Path:
    path = folder / "recipe.yaml"
    path.write_text(TINY.format(schedule=schedule, denoiser=denoiser, target=target, output=folder / "runs"))
    return path


def recipe_and_schedule(tmp_path: Path, schedule: str, target: str = "epsilon"):
    recipe = load_recipe(write_recipe(tmp_path, schedule=schedule, target=target))
    component = recipe.registry.get("schedule", recipe.components["schedule"][0])
    return recipe, build_component(component, recipe.components["schedule"][1])


@pytest.fixture(scope="module")
def diffusers():
    return pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e '.[diffusers]')")


def perturbed_unet(p: UNetParams, shape: tuple[int, ...], seed: int) -> UNet:
    """A UNet whose every weight is non-zero (DDPM zero-initialises the last conv of each block)."""
    torch.manual_seed(seed)
    net = UNet(p, shape).eval()
    with torch.no_grad():
        for weight in net.parameters():
            weight.add_(0.02 * torch.randn_like(weight))
    return net


@pytest.mark.parametrize(
    ("params", "shape"),
    [
        (
            UNetParams(channels=16, channel_mult=[1, 2], attention_resolutions=[8], groups=8, num_res_blocks=1),
            (3, 16, 16),
        ),
        (UNetParams(channels=16, channel_mult=[1, 2, 2], attention_resolutions=[4], groups=4, num_heads=2), (1, 8, 8)),
    ],
    ids=["3x16x16-one-head", "1x8x8-two-heads"],
)
@pytest.mark.slow
def test_diffusers_unet_with_the_exported_weights_gives_the_networks_output(diffusers, params, shape):
    net = perturbed_unet(params, shape, seed=0)
    config, weights = to_diffusers(net.state_dict(), params, shape, time_shift=1.0)
    model = diffusers.UNet2DModel(**{k: v for k, v in config.items() if not k.startswith("_")}).eval()
    model.load_state_dict(weights, strict=True)  # every weight has its place, and no place is left empty
    k = torch.tensor([0, 1, 10, 500, 999])
    x = torch.randn(len(k), *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = net(x, k.double() + 1)  # grid point k + 1 of 1,000: c_noise = 1000 t = k + 1
        theirs = model(x, k).sample
    assert ours.abs().max() > 0.1  # the comparison sees real outputs, not zeros
    assert (ours - theirs).abs().max() <= 1e-5


def test_a_timestep_shift_is_folded_into_the_embedding_exactly():
    from sandbox_plugins.denoisers.diffusers_export import frequencies, shift_time
    from sandbox_plugins.denoisers.layers import timestep_embedding

    dim, shift = 16, 1.0
    omega = frequencies(dim)
    emb = lambda t: torch.cat([torch.sin(t[:, None] * omega), torch.cos(t[:, None] * omega)], dim=1)  # float64
    k = torch.tensor([0.0, 3.0, 40.0, 999.0], dtype=torch.float64)
    torch.testing.assert_close(emb(k).float(), timestep_embedding(k, dim), atol=1e-4, rtol=0)  # the network's
    weight = torch.randn(8, dim, dtype=torch.float64)
    torch.testing.assert_close(
        emb(k) @ shift_time(weight, dim, shift).T, emb(k + shift) @ weight.T, atol=1e-12, rtol=0
    )


@pytest.mark.parametrize(
    ("schedule", "beta_schedule"),
    [
        ("{name: linear}", "linear"),
        ("{name: linear, beta_start: 0.0005, beta_end: 0.03}", "linear"),
        ("{name: cosine}", "squaredcos_cap_v2"),
        ("{name: cosine, s: 0.02}", "trained_betas"),
        ("{name: sigmoid}", "trained_betas"),
    ],
)
def test_the_schedulers_alphas_cumprod_are_the_schedules_alpha_squared(diffusers, tmp_path, schedule, beta_schedule):
    recipe, sched = recipe_and_schedule(tmp_path, schedule)
    config, shift = scheduler_config(recipe, sched)
    assert ("trained_betas" if "trained_betas" in config else config["beta_schedule"]) == beta_schedule
    assert shift == pytest.approx(1.0, abs=1e-9)
    scheduler = diffusers.DDPMScheduler.from_config(config)
    T = config["num_train_timesteps"]
    alpha, _ = sched.alpha_sigma((torch.arange(T, dtype=torch.float64) + 1) / T)
    assert (scheduler.alphas_cumprod.double() - alpha**2).abs().max() <= 1e-6


@pytest.mark.parametrize(
    ("target", "prediction_type"), [("epsilon", "epsilon"), ("v", "v_prediction"), ("x0", "sample")]
)
def test_the_target_is_the_prediction_type(tmp_path, target, prediction_type):
    recipe, sched = recipe_and_schedule(tmp_path, "{name: linear}", target=target)
    config, _ = scheduler_config(recipe, sched)
    assert config["prediction_type"] == prediction_type
    assert config["beta_start"] == 1e-4 and config["beta_end"] == 0.02 and config["num_train_timesteps"] == 1000


@pytest.mark.parametrize(
    ("schedule", "target", "key"),
    [
        ("{name: linear}", "edm", "'train.target': 'edm'"),
        ("{name: edm}", "epsilon", "'schedule.name': 'edm' is not variance-preserving"),
        ("{name: linear, num_steps: 100}", "epsilon", "'schedule.num_steps'"),
    ],
)
def test_what_diffusers_cannot_express_is_refused_naming_the_key(tmp_path, schedule, target, key):
    recipe, sched = recipe_and_schedule(tmp_path, schedule, target=target)
    with pytest.raises(RecipeError, match="recipe key " + key.replace("(", r"\(")):
        scheduler_config(recipe, sched)


@pytest.mark.parametrize(
    ("params", "shape", "key"),
    [
        (UNetParams(channels=16, channel_mult=[2, 2], attention_resolutions=[4], groups=8), (1, 8, 8), "channel_mult"),
        (
            UNetParams(channels=16, channel_mult=[1, 2], attention_resolutions=[8], groups=8, num_heads=2),
            (1, 8, 8),
            "num_heads",
        ),
    ],
)
def test_a_unet_diffusers_cannot_express_is_refused_naming_the_parameter(params, shape, key):
    with pytest.raises(ParameterError) as info:
        to_diffusers(UNet(params, shape).state_dict(), params, shape, time_shift=1.0)
    assert info.value.key == key


def test_a_denoiser_without_an_exporter_is_one_error_naming_the_key(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    write_recipe(run, denoiser="{name: resnet, channels: 16, num_blocks: 1, groups: 8}")
    assert cli.main(["export", str(run), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "recipe key 'denoiser.name': 'resnet'" in err and "no diffusers exporter" in err and "unet" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_ddpm_pipeline_loads_the_export_and_samples_images_of_the_datas_shape(
    diffusers, tmp_path, capsys, monkeypatch
):
    recipe = write_recipe(tmp_path)
    assert cli.main(["run", str(recipe)]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    out = tmp_path / "ddpm-digits"

    def no_data(params):
        raise AssertionError("the export read the dataset")

    monkeypatch.setattr("sandbox_plugins.datasets.digits.build", no_data)  # the shape comes from the run's samples
    assert cli.main(["export", str(run), "--format", "diffusers", str(out)]) == 0
    assert "matches the network" in capsys.readouterr().out
    index = json.loads((out / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DModel"] and index["scheduler"] == ["diffusers", "DDPMScheduler"]

    pipe = diffusers.DDPMPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np")
    assert images.images.shape == (2, 8, 8, 1)
    assert list(pipe.scheduler.timesteps) == [999, 499]  # the sandbox's trailing grid: from pure noise

    assert cli.main(["export", str(run), str(out)]) == 1  # never over an earlier export
    assert "is not an empty folder" in capsys.readouterr().err


@pytest.mark.slow
def test_a_class_conditional_unet_exports_with_its_class_table_and_matches_with_class_labels(
    diffusers, tmp_path, capsys, monkeypatch
):
    recipe = write_recipe(tmp_path)
    assert cli.main(["run", str(recipe), "train.conditional=true"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    out = tmp_path / "conditional"

    def no_data(params):
        raise AssertionError("the export read the dataset")

    monkeypatch.setattr("sandbox_plugins.datasets.digits.build", no_data)  # the classes come from summary.json
    assert cli.main(["export", str(run), "--format", "diffusers", str(out)]) == 0
    assert "matches the network" in capsys.readouterr().out  # checked with a class and the null class
    config = json.loads((out / "unet" / "config.json").read_text())
    assert config["num_class_embeds"] == 11 and config["class_embed_type"] is None
    model = diffusers.UNet2DModel.from_pretrained(out / "unet")
    x, k = torch.randn(2, 1, 8, 8), torch.tensor([10, 500])
    with torch.no_grad():
        three, null = (model(x, k, class_labels=torch.tensor([c, c])).sample for c in (3, 10))
    assert not torch.allclose(three, null)  # the class changes the output
