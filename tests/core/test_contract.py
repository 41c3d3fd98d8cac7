"""Built components are checked against their kind's protocol before any work, naming the plugin."""

from __future__ import annotations

import pytest
import torch

from sandbox import cli, hookimpl
from sandbox.contract import accepts, denoiser_problems, sampler_problems
from sandbox.testing import register_plugin


class NoKeywords:
    def nfe(self, schedule):
        return 1

    def __call__(self, denoise, noise, schedule):
        return noise


class NoNFE:
    def __call__(self, denoise, noise, schedule, *, generator=None, callback=None):
        return noise


class OneArgument(torch.nn.Module):
    def forward(self, x):
        return x


class Plugin:
    @hookimpl
    def register_samplers(self, register):
        register("no-keywords", lambda params: NoKeywords())
        register("no-nfe", lambda params: NoNFE())

    @hookimpl
    def register_denoisers(self, register):
        register("one-argument", lambda params, shape: OneArgument())


def test_signatures_are_read_against_the_protocol():
    assert accepts(lambda a, b, *, c=None: None, 2, ("c",)) == []
    assert accepts(lambda a: None, 2) == ["takes 1 positional argument, not 2"]
    assert accepts(lambda a, b, c: None, 2) == ["requires 3 positional arguments, not 2"]
    assert accepts(lambda *args, **kwargs: None, 3, ("generator",)) == []
    assert sampler_problems(NoKeywords()) == [
        "has no keyword 'generator'; expected sampler(denoise, noise, schedule, *, generator=None, callback=None)",
        "has no keyword 'callback'; expected sampler(denoise, noise, schedule, *, generator=None, callback=None)",
    ]
    assert sampler_problems(NoNFE()) == ["has no nfe(schedule) method (the number of denoise calls per sample)"]
    assert denoiser_problems(OneArgument()) == ["forward(x, c_noise) takes 1 positional argument, not 2"]
    assert denoiser_problems("not a module")[0].startswith("build(params, shape) returned str")


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "sampler.name=no-keywords",
            "sampler 'no-keywords' from throwaway-plugin does not follow the sampler protocol "
            "(sandbox.protocols): has no keyword 'generator'",
        ),
        ("sampler.name=no-nfe", "sampler 'no-nfe' from throwaway-plugin does not follow the sampler protocol"),
        (
            "denoiser.name=one-argument",
            "denoiser 'one-argument' from throwaway-plugin does not follow the denoiser "
            "protocol (sandbox.protocols): forward(x, c_noise) takes 1 positional argument",
        ),
    ],
)
def test_a_component_breaking_its_protocol_stops_the_run_before_training(
    override, message, tiny_recipe, tmp_path, capsys
):
    with register_plugin(Plugin()):
        code = cli.main(["run", str(tiny_recipe), override, f"run.output={tmp_path / 'out'}"])
    assert code == 1
    assert message in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "out").exists(), "nothing may be trained or written before the parts are checked"
