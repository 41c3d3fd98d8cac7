"""Contract and behaviour tests of the built-in datasets (cifar10 on a tiny fake copy in the real format)."""

from __future__ import annotations

import dataclasses
import math
import pickle
import subprocess
import sys
from urllib.error import URLError

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from sandbox_plugins.datasets import digits_classifier
from sandbox_plugins.datasets.metrics import sliced_wasserstein
from sandbox_plugins.datasets.params import TOY_SHAPES, Cifar10Params, DigitsParams, Toy2DParams
from sandbox_plugins.datasets.toy2d import SHAPES
from torch.utils.data import DataLoader

from sandbox.errors import ParameterError
from sandbox.protocols import first_tensor
from sandbox.registry import get_registry

PER_BATCH = 20  # images per fake CIFAR-10 batch file


def _image(planes: dict[tuple[int, int, int], int], fill: int = 128) -> np.ndarray:
    """One CIFAR-10 row: 3072 bytes, R then G then B plane, each 32x32 row-major."""
    row = np.full(3072, fill, dtype=np.uint8)
    for (c, h, w), value in planes.items():
        row[c * 1024 + h * 32 + w] = value
    return row


# Image 0 of data_batch_1: grey except three known pixels (channel, row, column) -> byte.
KNOWN = {(0, 0, 0): 255, (1, 3, 7): 51, (2, 31, 5): 0}


@pytest.fixture(scope="module")
def fake_cifar(tmp_path_factory):
    """A tiny CIFAR-10 in the on-disk format torchvision reads, plus the raw training rows.

    Each batch is a protocol-2 pickle of a dict with 'data' (uint8 [N, 3072]),
    'labels', 'batch_label' and 'filenames'; torchvision loads them with
    ``pickle.load(f, encoding="latin1")`` and reads 'data' and 'labels'
    (str keys, as the official Python 2 pickles decode); batches.meta holds 'label_names'.
    """
    root = tmp_path_factory.mktemp("cifar")
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(PER_BATCH, 3072), dtype=np.uint8)
        if name == "data_batch_1":
            data[0] = _image(KNOWN)
        if name != "test_batch":
            rows.append(data)
        entry = {
            "batch_label": f"fake {name}",
            "labels": [int(v) for v in rng.integers(0, 10, size=PER_BATCH)],
            "data": data,
            "filenames": [f"{name}_{i}.png" for i in range(PER_BATCH)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    meta = {
        "label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
        "num_cases_per_batch": PER_BATCH,
        "num_vis": 3072,
    }
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return root, np.concatenate(rows)


@pytest.fixture(scope="module", autouse=True)
def classifier_cache(tmp_path_factory):
    """Keep the digit classifier out of the user's cache directory."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SANDBOX_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def _cifar_params(root, **overrides) -> Cifar10Params:
    return Cifar10Params(**{"root": str(root), "verify": False, "val_size": 10, **overrides})


def _stack(dataset) -> torch.Tensor:
    return torch.stack([first_tensor(dataset[i]) for i in range(len(dataset))])


# ---------------------------------------------------------------- contract, every registered dataset

DATASETS = get_registry().names("dataset")


@pytest.fixture(scope="module", params=DATASETS)
def built(request, fake_cifar, tmp_path_factory):
    component = get_registry().get("dataset", request.param)
    params = _cifar_params(fake_cifar[0]) if request.param == "cifar10" else component.default_params()
    if request.param == "tensor_file":  # a small array file of its own
        params.path = str(tmp_path_factory.mktemp("arrays") / "x.npy")
        np.save(params.path, np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32))
    if request.param == "image_folder":  # a few written images of its own, of mixed sizes
        params.root, params.resolution, params.val_fraction = str(tmp_path_factory.mktemp("images")), 8, 0.25
        rng = np.random.default_rng(0)
        for i in range(16):
            pixels = rng.integers(0, 256, size=(8 + i, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(f"{params.root}/{i}.png")
    return request.param, component.build(params)


def test_builtins_are_registered():
    assert {"cifar10", "digits", "toy2d"} <= set(DATASETS)


@pytest.mark.parametrize("name", DATASETS)
def test_params_are_typed_dataclasses_omegaconf_accepts(name):
    params = get_registry().get("dataset", name).params
    assert dataclasses.is_dataclass(params)
    assert OmegaConf.to_object(OmegaConf.structured(params)) == params()


def test_items_are_float_tensors_of_shape(built):
    _name, splits = built
    assert isinstance(splits.shape, tuple)
    for split in (splits.train, splits.val):
        assert len(split) > 0
        item = first_tensor(split[0])
        assert isinstance(item, torch.Tensor)
        assert item.dtype == torch.float32
        assert tuple(item.shape) == splits.shape
    batch = first_tensor(next(iter(DataLoader(splits.train, batch_size=4))))
    assert isinstance(batch, torch.Tensor) and tuple(batch.shape) == (4, *splits.shape)
    if len(splits.shape) == 3:  # images live in [-1, 1]
        values = _stack(splits.val)
        assert values.min() >= -1 and values.max() <= 1
    assert splits.description


@pytest.mark.slow
def test_render_and_evaluate(built):
    _name, splits = built
    real = _stack(splits.val)[:64]
    if splits.render is not None:
        image = splits.render(real)
        assert image.dim() == 3 and image.shape[0] == 3
        assert image.min() >= 0 and image.max() <= 1
    if splits.evaluate is not None:
        scores = splits.evaluate(real)
        assert scores and all(isinstance(v, float) and math.isfinite(v) for v in scores.values())


def test_torch_free_import():
    code = "import sys, sandbox_plugins.datasets; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- cifar10


def test_cifar_reader_layout_and_scaling(fake_cifar):
    root, _rows = fake_cifar
    splits = get_registry().get("dataset", "cifar10").build(_cifar_params(root, flip=False))
    assert len(splits.train) == 5 * PER_BATCH - 10 and len(splits.val) == 10
    assert set(splits.train.indices.tolist()).isdisjoint(splits.val.indices.tolist())
    split = splits.train if 0 in splits.train.indices.tolist() else splits.val
    image, _label = split[split.indices.tolist().index(0)]
    expected = torch.full((3, 32, 32), 128 / 127.5 - 1)
    expected[0, 0, 0], expected[1, 3, 7], expected[2, 31, 5] = 1.0, 51 / 127.5 - 1, -1.0
    assert torch.allclose(image, expected, atol=1e-6)
    assert image[0, 0, 0] == 1.0 and image[2, 31, 5] == -1.0


def test_cifar_flip_applies_to_train_only(fake_cifar):
    root, rows = fake_cifar
    splits = get_registry().get("dataset", "cifar10").build(_cifar_params(root, flip=True))
    torch.manual_seed(0)
    for split in (splits.val, splits.train):
        originals = torch.from_numpy(rows[split.indices[:10].numpy()]).reshape(-1, 3, 32, 32).float() / 127.5 - 1
        seen = torch.stack([torch.stack([first_tensor(split[i]) for i in range(10)]) for _ in range(4)])
        unchanged = (seen == originals).flatten(2).all(-1)
        mirrored = (seen == originals.flip(-1)).flatten(2).all(-1)
        assert (unchanged | mirrored).all()
        if split is splits.val:
            assert unchanged.all()
        else:
            assert mirrored.any() and unchanged.any()


def _refusal(params: Cifar10Params) -> str:
    """The message the engine shows when building cifar10 with ``params`` fails on a field."""
    with pytest.raises(ParameterError) as info:
        get_registry().get("dataset", "cifar10").build(params)
    return info.value.in_section("dataset")


def test_cifar_missing_root_names_the_key(tmp_path):
    message = _refusal(Cifar10Params(root=str(tmp_path / "nowhere")))
    assert message.startswith("recipe key 'dataset.root'") and "set download=true" in message


def test_cifar_verify_rejects_unofficial_files(fake_cifar):
    message = _refusal(_cifar_params(fake_cifar[0], verify=True))
    assert message.startswith("recipe key 'dataset.verify'") and "integrity" in message


def test_cifar_verify_message_says_what_false_does(fake_cifar):
    message = _refusal(_cifar_params(fake_cifar[0], verify=True))
    assert "skips the MD5 check only" in message and "without running code" in message


class _RunsCode:
    """Unpickling this calls ``Path.touch`` on the marker: code a data file should never run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.mark.parametrize("verify", [False, True])
def test_cifar_batch_that_would_run_code_is_refused(fake_cifar, tmp_path, monkeypatch, verify):
    """A batch whose pickle calls a function is refused, verified or not, and the call never happens."""
    import shutil

    from sandbox_plugins.datasets import cifar10

    root = tmp_path / "root"
    shutil.copytree(fake_cifar[0], root)
    marker = tmp_path / "marker"
    batch = root / "cifar-10-batches-py" / "data_batch_3"
    with open(batch, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    entry["labels"] = _RunsCode(marker)
    with open(batch, "wb") as f:
        pickle.dump(entry, f, protocol=2)
    if verify:  # as if the tampered file had passed the MD5 check
        monkeypatch.setattr(cifar10, "check_integrity", lambda path, md5=None: True)
    message = _refusal(_cifar_params(root, verify=verify))
    assert not marker.exists()
    assert message.startswith("recipe key 'dataset.root'")
    assert "data_batch_3" in message and "asks for __builtin__.getattr" in message and "refused" in message


def test_cifar_reader_accepts_python2_pickles(tmp_path):
    """The official batches are Python 2 pickles: str (bytes) keys and numpy.core.multiarray arrays."""
    from sandbox_plugins.datasets.cifar10 import read_batch

    data = np.arange(2 * 3072, dtype=np.uint64).astype(np.uint8).reshape(2, 3072)
    # protocol 2 as Python 2's cPickle writes it: SHORT_BINSTRING/BINSTRING for str, numpy.core paths
    raw = data.tobytes()
    stream = (
        b"\x80\x02}q\x01(U\x04dataq\x02cnumpy.core.multiarray\n_reconstruct\nq\x03cnumpy\nndarray\nq\x04"
        b"K\x00\x85U\x01b\x87Rq\x05(K\x01K\x02M\x00\x0c\x86cnumpy\ndtype\nq\x06U\x02u1K\x00K\x01\x87Rq\x07"
        b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89T"
        + len(raw).to_bytes(4, "little")
        + raw
        + b"tbU\x06labelsq\x08]q\t(K\x01K\x02eu."
    )
    path = tmp_path / "data_batch_1"
    path.write_bytes(stream)
    entry = read_batch(str(path))
    assert entry["labels"] == [1, 2]
    assert np.array_equal(entry["data"], data)


def test_cifar_failed_download_names_the_key(tmp_path, monkeypatch):
    import torchvision.datasets.cifar

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", offline)
    message = _refusal(Cifar10Params(root=str(tmp_path), download=True))
    assert message.startswith("recipe key 'dataset.download'") and "no network" in message


def test_cifar_val_size_is_checked_against_the_files_read(fake_cifar):
    """100 is a valid size for CIFAR-10's 50,000 images, but the local copy holds only 5 x 20."""
    message = _refusal(_cifar_params(fake_cifar[0], val_size=100))
    assert message.startswith("recipe key 'dataset.val_size': 100; expected an integer from 1 to 99")


def test_cifar_val_size_is_checked_against_the_official_size():
    with pytest.raises(ParameterError, match="val_size: 50000; expected an integer from 1 to 49999"):
        Cifar10Params(val_size=50_000)


# ---------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits():
    return get_registry().get("dataset", "digits").build(DigitsParams())


def test_digits_split_and_range(digits):
    assert len(digits.train) + len(digits.val) == 1797 and len(digits.val) == 297
    values = torch.cat([_stack(digits.train), _stack(digits.val)])
    assert values.min() == -1.0 and values.max() == 1.0
    assert digits.shape == (1, 8, 8)


def test_digit_scores_separate_real_digits_from_noise(digits):
    real = digits.evaluate(_stack(digits.val))
    noise = torch.randn(297, 1, 8, 8, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    fake = digits.evaluate(noise)
    assert real["confident_share"] > 0.8 and real["class_coverage"] > 0.95
    assert fake["confident_share"] < real["confident_share"] - 0.4
    assert fake["mean_confidence"] < real["mean_confidence"] - 0.15
    assert digits.evaluate(torch.full((50, 1, 8, 8), -1.0))["class_coverage"] == 0.0  # one class only


def test_digits_upsampled_size_still_scores_high():
    splits = get_registry().get("dataset", "digits").build(DigitsParams(size=16))
    real = _stack(splits.val)
    assert real.shape == (297, 1, 16, 16) and real.min() >= -1 and real.max() <= 1
    assert splits.evaluate(real)["confident_share"] > 0.8


@pytest.mark.slow
def test_digit_classifier_is_cached_on_disk(tmp_path, monkeypatch, digits):
    monkeypatch.setenv("SANDBOX_CACHE", str(tmp_path))
    monkeypatch.setattr(digits_classifier, "_MEMORY", {})
    real = _stack(digits.val)
    first = digits.evaluate(real)
    files = list(tmp_path.glob("digits-classifier-*seed0-val297.pt"))
    assert len(files) == 1 and digits_classifier.VERSION in files[0].name
    monkeypatch.setattr(digits_classifier, "_MEMORY", {})
    monkeypatch.setattr(digits_classifier, "train_classifier", lambda *a, **k: pytest.fail("retrained"))
    assert digits.evaluate(real) == first


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"size": 1}, "size"),
        ({"size": 257}, "size"),
        ({"val_size": 1797}, "val_size"),
        ({"val_size": 0}, "val_size"),
    ],
)
def test_digits_bad_params(overrides, key):
    with pytest.raises(ParameterError) as info:
        DigitsParams(**overrides)
    assert info.value.key == key


# ---------------------------------------------------------------- toy2d


def _toy(**overrides):
    return get_registry().get("dataset", "toy2d").build(Toy2DParams(**{"n_train": 4000, "n_val": 2000, **overrides}))


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_toy_shapes_generate_scaled_and_score(shape):
    splits = _toy(shape=shape)
    train = splits.train.data
    assert train.shape == (4000, 2) and torch.isfinite(train).all()
    assert torch.allclose(train.std(dim=0), torch.ones(2), atol=0.1)
    assert torch.allclose(train.mean(dim=0), torch.zeros(2), atol=0.1)
    val = splits.val.data
    floor = splits.evaluate(val)["swd"]
    assert floor < 0.1
    assert splits.evaluate(val * 1.5 + 0.5)["swd"] > 4 * floor
    image = splits.render(val)
    assert image.shape == (3, 256, 256) and (image < 0.5).any()  # the points are drawn


def test_toy_bad_shape_lists_choices():
    with pytest.raises(ParameterError, match=r"shape.*moons, swissroll, checkerboard, gaussians8"):
        _toy(shape="spiral")


def test_toy_shape_choices_are_the_generators():
    """The torch-free list the params check against names exactly the shapes toy2d draws."""
    assert tuple(SHAPES) == TOY_SHAPES


def test_toy_generation_is_deterministic():
    a, b, c = _toy(seed=3), _toy(seed=3), _toy(seed=4)
    assert torch.equal(a.train.data, b.train.data) and torch.equal(a.val.data, b.val.data)
    assert not torch.equal(a.train.data, c.train.data)
    assert not torch.equal(a.train.data[:2000], a.val.data)  # train and val are separate draws


def test_sliced_wasserstein_of_a_translation():
    """For a shift by c, every 1-D W_2 is |theta . c|, so SW_2 = |c| / sqrt(2) in 2-D (on average over theta)."""
    x = torch.randn(1000, 2, generator=torch.Generator().manual_seed(0))
    shift = torch.tensor([3.0, 4.0])
    assert sliced_wasserstein(x, x) == 0.0
    assert sliced_wasserstein(x, x + shift) == pytest.approx(5 / math.sqrt(2), rel=0.15)
    assert sliced_wasserstein(x, x[:500]) < 0.2  # unequal sizes are compared through quantiles


@pytest.mark.slow
def test_a_class_conditional_run_trains_on_cifar_labels_on_the_device_and_draws_balanced_classes(fake_cifar, tmp_path):
    """CIFAR-10's labels reach a conditional run through the stored split (no DataLoader), and the final samples
    are balanced over the ten classes: the class-balanced set that ``eval.metrics: [fid]`` scores."""
    import json
    from pathlib import Path

    from sandbox import cli

    root = fake_cifar[0]
    args = [
        "run",
        str(Path(__file__).resolve().parents[2] / "recipes" / "quickstart.yaml"),
        "dataset={name: cifar10, root: " + str(root) + ", verify: false, val_size: 20}",
        "denoiser.groups=8",
        "denoiser.channels=8",
        "denoiser.attention_resolutions=[]",
        "train.conditional=true",
        "train.steps=2",
        "train.batch_size=8",
        "train.val_every=0",
        "run.data_on_device=true",
        "eval.num_samples=20",
        "sampler.steps=2",
        "run.threads=1",
        f"run.output={tmp_path}",
    ]
    assert cli.main(args) == 0
    (run,) = tmp_path.iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["classes"][:3] == ["airplane", "automobile", "bird"] and len(summary["classes"]) == 10
    assert summary["sampling"]["classes"] == {str(c): 2 for c in range(10)}
