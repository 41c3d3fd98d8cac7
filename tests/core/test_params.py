"""Every params dataclass checks its own ranges, and a bad value stops a recipe before anything is built.

The contract runs over every registered component of every kind, so a new
built-in is checked the moment it registers; the table of bad values then
goes through the three ways a recipe is read: ``load_recipe``, ``sandbox show``
and ``sandbox sweep --dry-run``, each of which must name the exact recipe key.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sandbox import cli
from sandbox.engine.build import build_parts
from sandbox.errors import ParameterError, RecipeError
from sandbox.recipe import load_recipe
from sandbox.registry import KINDS, get_registry
from sandbox.testing import built_in

REGISTRY = get_registry()
QUICKSTART = str(Path(__file__).resolve().parents[2] / "recipes" / "quickstart.yaml")
PARAMETRISED = [
    (kind, name, component.params)
    for kind in KINDS
    for name, component in sorted(REGISTRY.components[kind].items())
    if component.params is not None
]
IDS = [f"{kind}.{name}" for kind, name, _ in PARAMETRISED]


def _float_fields(params: type) -> list[str]:
    """The fields typed ``float`` or ``Optional[float]``."""
    hints = typing.get_type_hints(params)
    return [f.name for f in dataclasses.fields(params) if hints[f.name] in (float, float | None)]


# ---------------------------------------------------------------- the contract, over every component


@pytest.mark.parametrize("kind, name, params", PARAMETRISED, ids=IDS)
def test_defaults_are_valid_through_the_recipe_path(kind, name, params):
    """The defaults construct, and survive OmegaConf's structured round trip, which runs ``__post_init__``."""
    default = params()
    assert OmegaConf.to_object(OmegaConf.structured(params)) == default


@pytest.mark.parametrize("kind, name, params", PARAMETRISED, ids=IDS)
def test_nan_and_infinity_fail_every_float_field(kind, name, params):
    for key in _float_fields(params):
        for bad in (math.nan, math.inf, -math.inf):
            with pytest.raises(ParameterError) as info:
                dataclasses.replace(params(), **{key: bad})
            assert key in [k.strip() for k in info.value.key.split(",")], (key, bad, info.value)


def test_builtin_params_modules_are_torch_free():
    modules = ", ".join(f"sandbox_plugins.{kind}s.params" for kind in KINDS)
    code = f"import sys, {modules}; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- bad values name the recipe key

BAD = [  # (overrides on recipes/quickstart.yaml, the exact recipe key(s) the message names)
    (["sampler.steps=0"], "recipe key 'sampler.steps'"),
    (["sampler.steps=nan"], "recipe key 'sampler.steps'"),
    (["sampler.eta=nan"], "recipe key 'sampler.eta'"),
    (["sampler.eta=-0.5"], "recipe key 'sampler.eta'"),
    (["sampler.name=ddpm", "sampler.steps=0"], "recipe key 'sampler.steps'"),
    (["sampler.name=ddpm", "sampler.variance=medium"], "recipe key 'sampler.variance'"),
    (["sampler.name=euler", "sampler.steps=0"], "recipe key 'sampler.steps'"),
    (["sampler.name=dpmpp_2m", "sampler.steps=-1"], "recipe key 'sampler.steps'"),
    (["sampler.name=heun", "sampler.grid=Karras"], "recipe key 'sampler.grid'"),
    (["sampler.name=heun", "sampler.grid=[1.0,0.2,0.5,0.0]"], "recipe key 'sampler.grid'"),
    (["sampler.name=ddim", "sampler.grid=[1.0,0.5,0.1]"], "recipe key 'sampler.grid'"),
    (["sampler.name=euler_ancestral", "sampler.eta=1.5"], "recipe key 'sampler.eta'"),
    (["sampler.name=dpmpp_2m_sde", "sampler.solver_type=rk4"], "recipe key 'sampler.solver_type'"),
    (["sampler.name=dpmpp_3m", "sampler.s_noise=-1"], "recipe key 'sampler.s_noise'"),
    (["sampler.name=dpmpp_3m_sde", "sampler.eta=-1"], "recipe key 'sampler.eta'"),
    (["sampler.name=unipc", "sampler.order=4"], "recipe key 'sampler.order'"),
    (["sampler.name=unipc", "sampler.variant=bh3"], "recipe key 'sampler.variant'"),
    (["sampler.name=heun", "sampler.rho=0"], "recipe key 'sampler.rho'"),
    (["sampler.name=heun", "sampler.s_churn=inf"], "recipe key 'sampler.s_churn'"),
    (["sampler.name=heun", "sampler.s_tmin=2", "sampler.s_tmax=1"], "recipe keys 'sampler.s_tmin', 'sampler.s_tmax'"),
    (["schedule.num_steps=1"], "recipe key 'schedule.num_steps'"),
    (["schedule.s=nan"], "recipe key 'schedule.s'"),
    (["schedule.max_beta=1.0"], "recipe key 'schedule.max_beta'"),
    (["schedule.name=linear", "schedule.beta_start=0.03"], "recipe keys 'schedule.beta_start', 'schedule.beta_end'"),
    (["schedule.name=linear", "schedule.beta_end=1.5"], "recipe key 'schedule.beta_end'"),
    (["schedule.name=sigmoid", "schedule.start=3", "schedule.end=-3"], "recipe keys 'schedule.start', 'schedule.end'"),
    (["schedule.name=sigmoid", "schedule.tau=0"], "recipe key 'schedule.tau'"),
    (["schedule.name=sigmoid", "schedule.clip_min=0"], "recipe key 'schedule.clip_min'"),
    (
        ["schedule.name=sigmoid", "schedule.start=40", "schedule.end=50"],
        "recipe keys 'schedule.start', 'schedule.end', 'schedule.tau'",
    ),
    (["schedule.name=edm", "schedule.sigma_min=100"], "recipe keys 'schedule.sigma_min', 'schedule.sigma_max'"),
    (["schedule.name=edm", "schedule.p_std=-1"], "recipe key 'schedule.p_std'"),
    (["schedule.name=edm", "schedule.p_mean=nan"], "recipe key 'schedule.p_mean'"),
    (["denoiser.groups=7"], "recipe key 'denoiser.groups'"),  # quickstart's UNet has 32 channels
    (["denoiser.num_heads=3"], "recipe key 'denoiser.num_heads'"),
    (["denoiser.dropout=1.0"], "recipe key 'denoiser.dropout'"),
    (["denoiser.channel_mult=[]"], "recipe key 'denoiser.channel_mult'"),
    (["denoiser.name=resnet", "denoiser.groups=5"], "recipe key 'denoiser.groups'"),
    (["denoiser.name=mlp", "denoiser.layers=0"], "recipe key 'denoiser.layers'"),
    (["dataset.size=1"], "recipe key 'dataset.size'"),
    (["dataset.val_size=1797"], "recipe key 'dataset.val_size'"),
    (["dataset.name=toy2d", "dataset.shape=spiral"], "recipe key 'dataset.shape'"),
    (["dataset.name=toy2d", "dataset.noise=-0.1"], "recipe key 'dataset.noise'"),
    (["dataset.name=cifar10", "dataset.val_size=0"], "recipe key 'dataset.val_size'"),
    (["dataset.name=tensor_file", "dataset.normalize=zscore"], "recipe key 'dataset.normalize'"),
    (["dataset.name=image_folder", "dataset.channels=2"], "recipe key 'dataset.channels'"),
    (["dataset.name=gaussian_mixture", "dataset.radius=inf"], "recipe key 'dataset.radius'"),
    (
        ["dataset.name=gaussian_mixture", "dataset.weights=[1,2]"],
        "recipe keys 'dataset.weights', 'dataset.components'",
    ),
    (["train.lr=nan"], "recipe key 'train.lr'"),
    (["train.weight_decay=nan"], "recipe key 'train.weight_decay'"),
    (["train.grad_clip=nan"], "recipe key 'train.grad_clip'"),
    (["train.min_snr_gamma=nan"], "recipe key 'train.min_snr_gamma'"),
    (["eval.num_samples=0"], "recipe key 'eval.num_samples'"),
    (["run.device=tpu"], "recipe key 'run.device'"),
]
BAD_IDS = [" ".join(overrides) for overrides, _ in BAD]


def test_every_builtin_with_parameters_has_a_bad_value_in_the_table():
    quickstart = load_recipe(QUICKSTART).components
    named: dict[str, set[str]] = {kind: set() for kind in KINDS}
    for overrides, _ in BAD:
        kind = overrides[0].split(".")[0]
        if kind in KINDS:
            names = [o.split("=", 1)[1] for o in overrides if o.startswith(f"{kind}.name=")]
            named[kind].add(names[0] if names else quickstart[kind][0])
    for kind in KINDS:
        with_params = {n for n in built_in(REGISTRY, kind) if REGISTRY.get(kind, n).params is not None}
        assert with_params <= named[kind], f"no bad {kind} value for {sorted(with_params - named[kind])}"


@pytest.mark.parametrize("overrides, keys", BAD, ids=BAD_IDS)
def test_load_recipe_names_the_exact_key(overrides, keys):
    with pytest.raises(RecipeError) as info:
        load_recipe(QUICKSTART, overrides)
    assert str(info.value).startswith(f"{keys}:"), str(info.value)


@pytest.mark.parametrize("overrides, keys", BAD, ids=BAD_IDS)
def test_show_and_sweep_dry_run_exit_2(overrides, keys, tmp_path, capsys):
    assert cli.main(["show", QUICKSTART, *overrides]) == 2
    assert keys in capsys.readouterr().err.replace("\n", "")
    assert cli.main(["sweep", QUICKSTART, "--dry-run", "--out", str(tmp_path / "sweep"), *overrides]) == 2


# ---------------------------------------------------------------- what needs the data waits for the build


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["denoiser.attention_resolutions=[16]"],
            "recipe key 'denoiser.attention_resolutions': [16]; expected a subset of [8, 4]",
        ),
        (
            ["denoiser.channel_mult=[1,1,1,1,1]"],
            "recipe key 'denoiser.channel_mult': [1, 1, 1, 1, 1]; expected at most 4 entries for 8x8 images",
        ),
        (["dataset.name=toy2d"], "recipe key 'denoiser.name': 'unet'; expected image data of shape (C, H, W)"),
    ],
)
def test_shape_dependent_values_pass_loading_and_fail_the_build_naming_the_key(overrides, message):
    recipe = load_recipe(QUICKSTART, overrides)  # the parameters alone are fine
    with pytest.raises(RecipeError) as info:
        build_parts(recipe)
    assert str(info.value).startswith(message), str(info.value)
