"""The ``tensor_file`` dataset: your own arrays from .npy, .npz, .pt and .safetensors files, normalised per
feature on the training split, samples saved in the data's own units (``DataSplits.to_data``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sandbox_plugins.datasets.params import TensorFileParams
from sandbox_plugins.datasets.split import carve_validation

from sandbox import cli
from sandbox.engine.sample import sample_run
from sandbox.errors import ParameterError
from sandbox.protocols import StoredLabels, first_tensor
from sandbox.registry import get_registry
from sandbox.testing import check_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

REGISTRY = get_registry()
OFFSET = 100.0  # the data's mean: far from the unit scale the model sees


def build(path: Path, **params):
    return REGISTRY.get("dataset", "tensor_file").build(TensorFileParams(path=str(path), **params))


def points(n: int = 400, dim: int = 2, seed: int = 0) -> np.ndarray:
    """``n`` points around ``OFFSET`` with a different spread per feature (float32)."""
    rng = np.random.default_rng(seed)
    return (OFFSET + rng.normal(size=(n, dim)) * np.arange(1, dim + 1)).astype(np.float32)


def stack(split) -> torch.Tensor:
    return torch.stack([first_tensor(split[i]) for i in range(len(split))])


def write(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """``arrays`` in ``path``'s format (a .npy holds the first alone)."""
    suffix = path.suffix
    if suffix == ".npy":
        np.save(path, next(iter(arrays.values())))
    elif suffix == ".npz":
        np.savez(path, **arrays)
    elif suffix == ".pt":
        tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
        torch.save(tensors if len(tensors) > 1 else next(iter(tensors.values())), path)
    else:
        from safetensors.torch import save_file

        save_file({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}, str(path))
    return path


# ------------------------------------------------------------------------------------------------ formats


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".pt", ".safetensors"])
@pytest.mark.parametrize("item_shape", [(3,), (2, 5), (1, 4, 4)])
def test_each_format_round_trips_items_of_any_shape(tmp_path, suffix, item_shape):
    x = np.random.default_rng(1).normal(size=(50, *item_shape)).astype(np.float32) * 3 + 7
    data = build(write(tmp_path / f"a{suffix}", {"x": x}), normalize="none", val_size=10)
    assert data.shape == item_shape and len(data.train) == 40 and len(data.val) == 10
    train, val = carve_validation(50, 10, 0)
    assert torch.equal(stack(data.train), torch.from_numpy(x)[train])
    assert torch.equal(stack(data.val), torch.from_numpy(x)[val])
    assert data.to_data is None and data.classes is None
    assert data.render is None  # not 2-D points; (1, 4, 4) images get the engine's grid


def test_the_builtin_conforms_to_the_dataset_contract(tmp_path):
    path = write(tmp_path / "p.npz", {"x": points()})
    splits = check_dataset("tensor_file", TensorFileParams(path=str(path)))
    assert splits.render is not None  # 2-D points: a density picture


def test_the_only_array_else_x_else_key(tmp_path):
    x = points(20)
    assert build(write(tmp_path / "one.npz", {"points": x})).shape == (2,)
    assert build(write(tmp_path / "two.npz", {"x": x, "other": x[:, :1]})).shape == (2,)
    assert build(write(tmp_path / "k.npz", {"a": x, "b": x[:, :1]}), key="b").shape == (1,)


# ------------------------------------------------------------------------------------------------ normalisation


def test_standardisation_uses_the_training_split_only(tmp_path):
    x = points(300, dim=3)
    data = build(write(tmp_path / "p.npy", {"x": x}), normalize="standard", val_fraction=0.2)
    train, _ = carve_validation(300, 60, 0)
    raw = torch.from_numpy(x).double()[train]
    mean, std = raw.mean(0), raw.std(0, correction=0)
    items = stack(data.train).double()
    assert torch.allclose(items, (raw - mean) / std, atol=1e-5)
    assert torch.allclose(items.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(items.std(0, correction=0), torch.ones(3, dtype=torch.float64), atol=1e-5)
    val = stack(data.val).double()
    assert torch.allclose(data.to_data(val), torch.from_numpy(x).double()[carve_validation(300, 60, 0)[1]], atol=1e-4)


def test_minmax_maps_the_training_range_onto_minus_one_one(tmp_path):
    x = points(200, dim=4)
    data = build(write(tmp_path / "p.pt", {"x": x}), normalize="minmax", val_size=20)
    train, val = carve_validation(200, 20, 0)
    raw = torch.from_numpy(x).double()
    low, high = raw[train].amin(0), raw[train].amax(0)
    items = stack(data.train).double()
    assert torch.allclose(items, 2 * (raw[train] - low) / (high - low) - 1, atol=1e-5)
    assert torch.allclose(items.amin(0), -torch.ones(4, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(items.amax(0), torch.ones(4, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(data.to_data(stack(data.val).double()), raw[val], atol=1e-4)


def test_a_constant_feature_is_left_unscaled_and_said_in_the_header(tmp_path):
    x = points(100, dim=3)
    x[:, 1] = 5.0
    data = build(write(tmp_path / "p.npy", {"x": x}), normalize="minmax")
    assert "1 constant feature(s) left unscaled, first (1,)" in data.description
    items = stack(data.train)
    assert torch.equal(items[:, 1], torch.zeros(len(items)))
    assert torch.allclose(data.to_data(items)[:, 1], torch.full((len(items),), 5.0))


def test_evaluate_scores_in_data_units_against_the_training_split(tmp_path):
    x = points(2000, dim=2)
    data = build(write(tmp_path / "p.npy", {"x": x}))
    real = data.evaluate(stack(data.val))
    assert set(real) == {"swd", "mean_error", "std_error"}
    assert real["swd"] < 0.3 and real["mean_error"] < 0.2
    shifted = data.evaluate(stack(data.val) + 1.0)  # one std of the model's units: 1 and 2 in data units
    assert shifted["mean_error"] == pytest.approx(1.5 + 0.0, abs=0.2)
    assert shifted["swd"] > 5 * real["swd"]


# ------------------------------------------------------------------------------------------------ classes


def test_labels_become_classes_in_sorted_order(tmp_path):
    x, y = points(60), np.repeat(np.array([7, -2, 30]), 20)
    data = build(write(tmp_path / "l.npz", {"x": x, "y": y}), labels_key="y", val_size=12)
    assert data.classes == ["-2", "7", "30"]
    assert isinstance(data.train, StoredLabels)
    train, _ = carve_validation(60, 12, 0)
    expected = torch.from_numpy(np.searchsorted([-2, 7, 30], y))[train]
    assert torch.equal(data.train.stored_labels(), expected)
    assert data.train[0][1] == int(expected[0])


def test_a_classes_array_names_the_labels(tmp_path):
    x, y = points(30), np.arange(30) % 3
    path = write(tmp_path / "n.npz", {"x": x, "y": y, "classes": np.array(["cat", "dog", "eel"])})
    assert build(path, labels_key="y").classes == ["cat", "dog", "eel"]


# ------------------------------------------------------------------------------------------------ runs


def recipe(tmp_path: Path, dataset: str, steps: int = 30) -> Path:
    path = tmp_path / "arrays.yaml"
    path.write_text(
        f"""
dataset: {dataset}
schedule: {{name: cosine}}
denoiser: {{name: mlp, hidden: 32, layers: 2}}
sampler: {{name: ddim, steps: 8}}
train: {{steps: {steps}, batch_size: 64, lr: 2e-3, target: v, warmup_steps: 2,
        log_every: 10, val_every: 0, sample_every: 0}}
eval: {{val_batches: 1, num_samples: 128, sample_batch: 128, grid_samples: 16}}
run: {{device: cpu, seed: 0, threads: 1, output: {tmp_path / "runs"}}}
"""
    )
    return path


def only_run(tmp_path: Path) -> Path:
    (run_dir,) = (tmp_path / "runs").iterdir()
    return run_dir


def test_a_run_saves_samples_in_the_datas_units(tmp_path):
    path = write(tmp_path / "p.npy", {"x": points(512, dim=2)})
    dataset = f"{{name: tensor_file, path: {path}, normalize: standard}}"
    assert cli.main(["run", str(recipe(tmp_path, dataset, steps=60))]) == 0
    run_dir = only_run(tmp_path)
    samples = torch.load(run_dir / "samples" / "final.pt", weights_only=True)
    assert samples.shape == (128, 2)
    assert (samples.mean(0) - OFFSET).abs().max() < 2.0  # the data's mean, not the model's 0
    assert 0.3 < float(samples[:, 0].std()) < 3.0  # the first feature's std is 1 in data units
    summary = json.loads((run_dir / "summary.json").read_text())
    quality = summary["sample_quality"]
    assert set(quality["generated"]) == {"swd", "mean_error", "std_error"}
    assert quality["real_heldout"]["mean_error"] < 1.0  # in data units: held-out points are near the data's mean
    assert (run_dir / "samples" / "final.png").is_file()  # 2-D points are drawn
    again = sample_run(run_dir, [])  # sandbox sample: the same seed, the same samples, in the same units
    assert torch.equal(torch.load(again / "samples.pt", weights_only=True), samples)


def test_a_conditional_run_on_labelled_arrays(tmp_path):
    x = np.concatenate([points(200, seed=1) - 3, points(200, seed=2) + 3])
    y = np.repeat(np.array([0, 1]), 200)
    path = write(tmp_path / "l.npz", {"x": x, "y": y})
    dataset = f"{{name: tensor_file, path: {path}, labels_key: y}}"
    assert cli.main(["run", str(recipe(tmp_path, dataset, steps=20)), "train.conditional=true"]) == 0
    run_dir = only_run(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["classes"] == ["0", "1"]
    assert summary["sampling"]["classes"] == {"0": 64, "1": 64}
    labels = torch.load(run_dir / "samples" / "final_labels.pt", weights_only=True)
    assert labels.shape == (128,)


# ------------------------------------------------------------------------------------------------ errors


def refused(capsys, tmp_path: Path, dataset: str) -> str:
    assert cli.main(["run", str(recipe(tmp_path, dataset))]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    return err


def test_a_missing_file_names_the_key(tmp_path, capsys):
    err = refused(capsys, tmp_path, f"{{name: tensor_file, path: {tmp_path / 'none.npy'}}}")
    assert "recipe key 'dataset.path'" in err and "an existing file" in err


def test_no_path_names_the_key(tmp_path, capsys):
    err = refused(capsys, tmp_path, "{name: tensor_file}")
    assert "recipe key 'dataset.path'" in err and "the path of your array file" in err


def test_an_unknown_extension_names_the_key(tmp_path, capsys):
    err = refused(capsys, tmp_path, f"{{name: tensor_file, path: {tmp_path / 'data.csv'}}}")
    assert "recipe key 'dataset.path'" in err and ".npy, .npz, .pt, .safetensors" in err


def test_a_missing_key_lists_the_arrays(tmp_path, capsys):
    path = write(tmp_path / "a.npz", {"a": points(10), "b": points(10)})
    err = refused(capsys, tmp_path, f"{{name: tensor_file, path: {path}, key: x2}}")
    assert "recipe key 'dataset.key': 'x2'" in err and "which holds: a, b" in err
    err = refused(capsys, tmp_path, f"{{name: tensor_file, path: {path}}}")
    assert "recipe key 'dataset.key'" in err and "none named x): a, b" in err


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.zeros(7, dtype=np.int64), "labels of shape [10], one per item (they are [7])"),
        (np.zeros(10, dtype=np.float32), "integer labels (they are torch.float32)"),
    ],
)
def test_bad_labels_name_the_key(tmp_path, capsys, labels, message):
    path = write(tmp_path / "l.npz", {"x": points(10), "y": labels})
    err = refused(capsys, tmp_path, f"{{name: tensor_file, path: {path}, labels_key: y}}")
    assert "recipe key 'dataset.labels_key': 'y'" in err and message in err


def test_missing_labels_name_the_key(tmp_path, capsys):
    path = write(tmp_path / "l.npz", {"x": points(10)})
    err = refused(capsys, tmp_path, f"{{name: tensor_file, path: {path}, labels_key: labels}}")
    assert "recipe key 'dataset.labels_key': 'labels'" in err and "which holds: x" in err


def test_fewer_than_two_items_names_the_path(tmp_path, capsys):
    path = write(tmp_path / "one.npy", {"x": points(1)})
    err = refused(capsys, tmp_path, f"{{name: tensor_file, path: {path}}}")
    assert "recipe key 'dataset.path'" in err and "at least 2 items (it has 1)" in err


def test_non_finite_values_name_the_path(tmp_path, capsys):
    x = points(10)
    x[3, 1] = np.nan
    x[6, 0] = np.inf
    path = write(tmp_path / "nan.npy", {"x": x})
    err = refused(capsys, tmp_path, f"{{name: tensor_file, path: {path}}}")
    assert "recipe key 'dataset.path'" in err and "2 of 10 items hold NaN or inf, first item 3" in err


def test_a_pickled_object_array_is_refused_not_run(tmp_path, capsys):
    path = tmp_path / "obj.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    err = refused(capsys, tmp_path, f"{{name: tensor_file, path: {path}}}")
    assert "recipe key 'dataset.path'" in err and "a readable .npy file" in err


def test_bad_params_fail_when_the_recipe_is_read():
    with pytest.raises(ParameterError, match="normalize"):
        TensorFileParams(path="a.npy", normalize="zscore")
    with pytest.raises(ParameterError, match="val_fraction"):
        TensorFileParams(path="a.npy", val_fraction=1.0)
    with pytest.raises(ParameterError, match="path"):
        TensorFileParams(path="a.txt")


def test_val_size_as_large_as_the_data_names_the_key(tmp_path, capsys):
    path = write(tmp_path / "p.npy", {"x": points(10)})
    err = refused(capsys, tmp_path, f"{{name: tensor_file, path: {path}, val_size: 10}}")
    assert "recipe key 'dataset.val_size': 10" in err


class Payload:
    """An object a full unpickler would construct: weights_only refuses it."""


def test_a_pt_file_with_an_object_is_refused_not_run(tmp_path, capsys):
    path = tmp_path / "obj.pt"
    torch.save({"x": torch.zeros(4, 2), "payload": Payload()}, path)
    err = refused(capsys, tmp_path, f"{{name: tensor_file, path: {path}}}")
    assert "recipe key 'dataset.path'" in err and "a readable .pt file" in err


def test_a_run_on_uint8_images_draws_a_grid_and_saves_pixel_values(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(256, 1, 8, 8), dtype=np.uint8)
    path = write(tmp_path / "images.safetensors", {"images": images})
    assert cli.main(["run", str(recipe(tmp_path, f"{{name: tensor_file, path: {path}, normalize: minmax}}", 20))]) == 0
    run_dir = only_run(tmp_path)
    samples = torch.load(run_dir / "samples" / "final.pt", weights_only=True)
    assert samples.shape == (128, 1, 8, 8)
    assert 60 < float(samples.mean()) < 200  # pixel values around 127.5, not the model's [-1, 1]
    assert (run_dir / "samples" / "final.png").is_file()  # (1, 8, 8) items: the engine's image grid
