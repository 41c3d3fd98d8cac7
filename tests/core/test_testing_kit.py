"""The conformance kit (sandbox.testing): every built-in passes it, and broken components fail it clearly."""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image

from sandbox import hookimpl
from sandbox.errors import ParameterError
from sandbox.protocols import DataSplits
from sandbox.registry import get_registry
from sandbox.sampling import prior
from sandbox.schedule import Schedule
from sandbox.testing import (
    check_dataset,
    check_denoiser,
    check_sampler,
    check_schedule,
    gaussian_denoiser,
    register_plugin,
)

REGISTRY = get_registry()
SHAPES = [(2,), (1, 8, 8), (3, 16, 16)]  # a denoiser is checked on the first shape its parameters accept
SMALL = {  # keep the contract check of big defaults fast (the DDPM UNet has 35.7M parameters)
    "unet": {"channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [8], "groups": 8},
    "resnet": {"channels": 16, "num_blocks": 2, "groups": 8},
}


# ---------------------------------------------------------------- every built-in conforms


@pytest.mark.slow
@pytest.mark.parametrize("name", REGISTRY.names("schedule"))
def test_builtin_schedule_conforms(name):
    check_schedule(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", REGISTRY.names("sampler"))
def test_builtin_sampler_conforms(name):
    check_sampler(name)


def _params(kind: str, name: str, **overrides):
    component = REGISTRY.get(kind, name)
    params = component.default_params()
    return dataclasses.replace(params, **overrides) if params is not None else None


@pytest.fixture(scope="module")
def exact_data():
    """A built-in dataset with a closed-form denoiser (for analytic denoisers such as the oracle), or None."""
    for name in REGISTRY.names("dataset"):
        if name != "cifar10":
            try:
                data = REGISTRY.get("dataset", name).build()
            except ParameterError:  # its defaults name no data (a file of your own): no closed form either
                continue
            if data.exact_x0 is not None and len(data.shape) == 1:
                return data
    return None


@pytest.mark.parametrize("name", REGISTRY.names("denoiser"))
def test_builtin_denoiser_conforms(name, exact_data):
    params = _params("denoiser", name, **SMALL.get(name, {}))
    for shape in SHAPES:
        try:
            check_denoiser(name, shape, params, data=exact_data)
        except ParameterError:  # these parameters refuse this shape: try the next
            continue
        return
    pytest.fail(f"denoiser '{name}' accepts none of {SHAPES}")


@pytest.fixture(scope="module")
def dataset_params(tmp_path_factory):
    """Parameters that build each dataset offline: cifar10 reads a tiny copy in torchvision's format."""
    root = tmp_path_factory.mktemp("cifar")
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {
            "data": rng.integers(0, 256, size=(4, 3072), dtype=np.uint8),
            "labels": [0, 1, 2, 3],
            "batch_label": name,
            "filenames": [f"{i}.png" for i in range(4)],
        }
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}, protocol=2))
    arrays = tmp_path_factory.mktemp("arrays") / "x.npy"
    np.save(arrays, rng.normal(size=(16, 3)).astype(np.float32))
    images = tmp_path_factory.mktemp("images")
    for i in range(16):
        Image.fromarray(rng.integers(0, 256, size=(8 + i, 12, 3), dtype=np.uint8)).save(images / f"{i}.png")
    return {
        "cifar10": {"root": str(root), "verify": False, "val_size": 4},
        "tensor_file": {"path": str(arrays)},
        "image_folder": {"root": str(images), "resolution": 8, "val_fraction": 0.25},
    }


@pytest.fixture(scope="module", autouse=True)
def classifier_cache(tmp_path_factory):
    """Keep the digit classifier (trained on first use) out of the user's cache directory."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SANDBOX_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.mark.parametrize("name", REGISTRY.names("dataset"))
def test_builtin_dataset_conforms(name, dataset_params):
    check_dataset(name, _params("dataset", name, **dataset_params.get(name, {})))


# ---------------------------------------------------------------- broken schedules fail clearly


class VP(Schedule):
    """A correct reference: variance preserving, log-SNR linear from 8 to -8."""

    def alpha_sigma(self, t):
        lambda_ = 8.0 - 16.0 * torch.as_tensor(t)
        return torch.sigmoid(lambda_).sqrt(), torch.sigmoid(-lambda_).sqrt()


class RisingLogSNR(VP):
    def alpha_sigma(self, t):
        return super().alpha_sigma(torch.where(torch.as_tensor(t) < 0.5, t, 1.2 - torch.as_tensor(t)))


class NotEndingAtZero(VP):
    def timesteps(self, steps):
        return torch.linspace(1.0, 0.01, steps + 1, dtype=torch.float64)


class TooManySteps(VP):
    def timesteps(self, steps):
        return torch.linspace(1.0, 0.0, 2 * steps + 1, dtype=torch.float64)


class SampleTIncludesZero(VP):
    def sample_t(self, n, generator=None, device=None):
        return torch.rand(n, generator=generator).floor()


class SampleTIgnoresGenerator(VP):
    def sample_t(self, n, generator=None, device=None):
        return 1.0 - torch.rand(n)


class WrongInverse(VP):
    def t_from_log_snr(self, lambda_):
        return (8.0 - torch.as_tensor(lambda_, dtype=torch.float64)) / 8.0 % 1.0


class ScalarAlpha(VP):
    def alpha_sigma(self, t):
        alpha, sigma = super().alpha_sigma(t)
        return alpha.mean(), sigma


class InconsistentLogSNR(VP):
    def log_snr(self, t):
        return 2.0 * super().log_snr(t)


class ZeroSigma(VP):
    def alpha_sigma(self, t):
        alpha, sigma = super().alpha_sigma(t)
        return alpha, torch.where(torch.as_tensor(t) < 0.1, torch.zeros_like(sigma), sigma)


def test_reference_schedule_passes():
    check_schedule(VP(), samplers=["ddim", "ddpm"])


class NeverPureNoise(VP):
    """Log-SNR from 8 down to only 0: at t = 1 half the signal is left."""

    def alpha_sigma(self, t):
        lambda_ = 8.0 - 8.0 * torch.as_tensor(t)
        return torch.sigmoid(lambda_).sqrt(), torch.sigmoid(-lambda_).sqrt()


def test_a_schedule_that_never_reaches_noise_fails_with_its_likely_cause():
    with pytest.raises(AssertionError) as info:
        check_schedule(NeverPureNoise(), samplers=["ddim"])
    message = str(info.value)
    assert message.startswith("schedule NeverPureNoise with sampler 'ddim': with the exact denoiser")
    assert "50 denoise calls" in message and "tolerance 0.05" in message
    assert "Likely cause: the schedule never reaches pure noise" in message and "alpha = 0.707" in message


@pytest.mark.slow
def test_checking_a_schedule_uses_only_the_builtin_samplers():
    class Broken:
        @hookimpl
        def register_samplers(self, register):
            register("broken-sampler", lambda params: ReturnsNoise())

    with register_plugin(Broken()) as registry:
        check_schedule(VP(), registry=registry)  # an unrelated, broken sampler plugin cannot fail it
        with pytest.raises(AssertionError, match="with sampler 'broken-sampler'"):
            check_schedule(VP(), registry=registry, samplers=["broken-sampler"])


@pytest.mark.parametrize(
    "schedule, message",
    [
        (RisingLogSNR(), r"log_snr\(t\) must not increase with t; it rises after t = \[0\.5"),
        (NotEndingAtZero(), r"timesteps\(1\) must run from 1 to exactly 0"),
        (TooManySteps(), r"timesteps\(1\) must be a 1-D tensor of 2 to 2 times"),
        (SampleTIncludesZero(), r"sample_t must draw times in \(0, 1\]"),
        (SampleTIgnoresGenerator(), r"sample_t ignores its generator"),
        (WrongInverse(), r"log_snr\(t_from_log_snr\(lambda\)\) != lambda: t_from_log_snr does not invert log_snr"),
        (ScalarAlpha(), r"returned alpha of shape \(\); expected floating tensors of t's shape"),
        (InconsistentLogSNR(), r"log_snr\(t\) disagrees with 2 log\(alpha\(t\) / sigma\(t\)\)"),
        (ZeroSigma(), r"sigma\(t\) must be positive for t > 0"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Schedule) else "",
)
def test_broken_schedule_fails_with_a_clear_message(schedule, message):
    with pytest.raises(AssertionError, match=rf"^schedule {type(schedule).__name__}: .*{message}"):
        check_schedule(schedule, samplers=[])


# ---------------------------------------------------------------- broken samplers fail clearly


class Reference:
    """A correct deterministic DDIM (eta = 0), 50 steps, for the broken variants below to bend."""

    steps = 50

    def nfe(self, schedule):
        return self.steps

    def __call__(self, denoise, noise, schedule, *, generator=None, callback=None):
        ts = schedule.timesteps(self.steps).tolist()
        x = prior(noise, schedule, ts[0])
        for i, (t, s) in enumerate(zip(ts[:-1], ts[1:])):
            x0 = denoise(x, t)
            (alpha_t, sigma_t), (alpha_s, sigma_s) = (
                schedule.alpha_sigma(torch.tensor([v], dtype=torch.float64)) for v in (t, s)
            )
            if callback is not None:
                callback({"x": x, "i": i, "t": t, "denoised": x0})
            x = float(alpha_s) * x0 + float(sigma_s) * (x - float(alpha_t) * x0) / float(sigma_t)
        return self.finish(x, generator)

    def finish(self, x, generator):
        return x


class IgnoresGenerator(Reference):
    def finish(self, x, generator):
        return x + 1e-3 * torch.randn_like(x)  # global RNG: not reproducible from the generator


class ShortCallback(Reference):
    def __call__(self, denoise, noise, schedule, *, generator=None, callback=None):
        return super().__call__(
            denoise,
            noise,
            schedule,
            generator=generator,
            callback=lambda info: callback({"x": info["x"], "i": info["i"]}),
        )


class WrongNFE(Reference):
    def nfe(self, schedule):
        return self.steps + 1


class ReturnsNoise(Reference):
    def __call__(self, denoise, noise, schedule, *, generator=None, callback=None):
        super().__call__(denoise, noise, schedule, generator=generator, callback=callback)
        return noise.clone()


class NoCallbackKeyword(Reference):
    def __call__(self, denoise, noise, schedule, *, generator=None):
        return super().__call__(denoise, noise, schedule, generator=generator)


class InPlace(Reference):
    def __call__(self, denoise, noise, schedule, *, generator=None, callback=None):
        out = super().__call__(denoise, noise, schedule, generator=generator, callback=callback)
        noise.mul_(0.0)
        return out


def test_reference_sampler_passes():
    check_sampler(Reference())


@pytest.mark.parametrize(
    "sampler, message",
    [
        (IgnoresGenerator(), "does not honour its generator"),
        (ShortCallback(), r"callback got \['i', 'x'\]; expected a dict with keys \['denoised', 'i', 't', 'x'\]"),
        (WrongNFE(), r"made 50 denoise calls but nfe\(schedule\) says 51"),
        (
            ReturnsNoise(),
            r"and 50 denoise calls, 4000 samples have mean \[.*\] and std \[.*\] \(tolerance 0.05 on each\)",
        ),
        (NoCallbackKeyword(), r"has no keyword 'callback'; expected sampler\(denoise, noise, schedule, \*, generator"),
        (InPlace(), "changed the noise tensor in place"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Reference) else "",
)
def test_broken_sampler_fails_with_a_clear_message(sampler, message):
    with pytest.raises(
        AssertionError, match=rf"^sampler {type(sampler).__name__}( on schedule 'linear')?: .*{message}"
    ):
        check_sampler(sampler, schedules=["linear"])


# ---------------------------------------------------------------- broken denoisers and datasets


class Net(torch.nn.Module):
    """A correct tiny denoiser on 2-D items."""

    def __init__(self):
        super().__init__()
        self.inner = torch.nn.Linear(3, 16)
        self.out = torch.nn.Linear(16, 2)

    def forward(self, x, c_noise):
        return self.out(torch.tanh(self.inner(torch.cat([x, c_noise[:, None] / 1000.0], 1))))


class IgnoresNoiseLevel(Net):
    def forward(self, x, c_noise):
        return super().forward(x, torch.zeros_like(c_noise))


class ChangesShape(Net):
    def forward(self, x, c_noise):
        return super().forward(x, c_noise)[:, :1]


class DeadParameter(Net):
    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(3))


@pytest.mark.parametrize(
    "net, message",
    [
        (Net(), None),
        (IgnoresNoiseLevel(), r"the output does not depend on c_noise"),
        (ChangesShape(), r"returned shape \(2, 1\); expected x's shape"),
        (DeadParameter(), r"no gradient reached \['unused'\]"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, torch.nn.Module) else "",
)
def test_denoiser_contract(net, message):
    if message is None:
        check_denoiser(net, (2,))
        return
    with pytest.raises(AssertionError, match=rf"^denoiser {type(net).__name__}: .*{message}"):
        check_denoiser(net, (2,))


def _splits(**overrides) -> DataSplits:
    items = torch.randn(8, 2)
    return DataSplits(**{"train": items, "val": items, "shape": (2,), **overrides})


@pytest.mark.parametrize(
    "splits, message",
    [
        (_splits(), None),
        ({"train": [], "val": []}, r"returned dict; expected sandbox.protocols.DataSplits"),
        (_splits(shape=(3,)), r"train\[0\] has shape \(2,\); expected \(3,\)"),
        (_splits(train=torch.zeros(0, 2)), r"the train split is empty"),
        (_splits(val=torch.arange(16).reshape(8, 2)), r"val\[0\] is Tensor; expected a float tensor"),
        (_splits(render=lambda batch: torch.ones(3, 4, 4) * 2), r"render\(samples\) must lie in \[0, 1\]"),
        (_splits(evaluate=lambda batch: {"score": "high"}), r"evaluate\(samples\)\['score'\] = 'high'"),
    ],
    ids=["good", "not-splits", "shape", "empty", "int-items", "render", "evaluate"],
)
def test_dataset_contract(splits, message):
    if message is None:
        check_dataset(splits)
        return
    with pytest.raises(AssertionError, match=rf"^dataset \w+: .*{message}"):
        check_dataset(splits)


# ---------------------------------------------------------------- helpers


@dataclass
class TwoStepParams:
    """Two-step reference DDIM, for the throwaway-plugin test."""

    steps: int = 2


def build_two_step(params):
    sampler = Reference()
    sampler.steps = params.steps
    return sampler


class TwoStepPlugin:
    @hookimpl
    def register_samplers(self, register):
        register("two-step", build_two_step, params=TwoStepParams)


def test_register_plugin_is_seen_inside_and_gone_after():
    before = get_registry()
    with register_plugin(TwoStepPlugin(), name="two-step-plugin") as registry:
        assert get_registry() is registry
        component = registry.get("sampler", "two-step")
        assert component.plugin == "two-step-plugin"
        check_sampler("two-step", TwoStepParams(steps=30), schedules=["cosine"])
    assert get_registry() is before
    assert "two-step" not in get_registry().names("sampler")


def test_register_plugin_unregisters_even_when_the_block_fails():
    with pytest.raises(RuntimeError, match="boom"), register_plugin(TwoStepPlugin()):
        raise RuntimeError("boom")
    assert "two-step" not in get_registry().names("sampler")


def test_gaussian_denoiser_is_exact_at_the_clean_end_and_shrinks_to_the_mean_at_the_noisy_end():
    mu = torch.tensor([1.0, -0.5])
    denoise = gaussian_denoiser(VP(), mu, 0.5)
    x = torch.randn(5, 2)
    assert torch.allclose(denoise(x, 0.0), x, atol=1e-2)
    assert torch.allclose(denoise(x, torch.ones(5)), mu.expand(5, 2), atol=2e-2)
