"""Class labels of the built-in datasets: labelled items, ``classes``, the conditional exact denoiser and
``evaluate_classes`` (the contract: ``sandbox.protocols``, datasets section)."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from sandbox_plugins.datasets.gaussian_mixture import _stream_seed, mixture
from sandbox_plugins.datasets.items import TensorItems, Uint8Images
from sandbox_plugins.datasets.split import carve_validation
from torch.utils.data import DataLoader

from sandbox.errors import ParameterError
from sandbox.protocols import StoredItems, StoredLabels, item_label, null_label
from sandbox.registry import get_registry

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: threads only stall on a busy machine

REGISTRY = get_registry()
CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def mixture_params(**overrides):
    p = REGISTRY.get("dataset", "gaussian_mixture").default_params()
    p.n_train, p.n_val = 64, 32
    for key, value in overrides.items():
        setattr(p, key, value)
    return p


def build_mixture(**overrides):
    return REGISTRY.get("dataset", "gaussian_mixture").build(mixture_params(**overrides))


def labels_of(split) -> list[int]:
    return [split[i][1] for i in range(len(split))]


# Two 2-D components, chosen by hand: means, standard deviations, weights.
MU = [[1.5, -0.5], [-1.0, 2.0]]
S = [0.3, 0.7]
W = [0.25, 0.75]
TWO = {"components": 2, "means": MU, "stds": S, "weights": W}


def single_gaussian_mean(x: list[float], mu: list[float], s: float, alpha: float, sigma: float) -> list[float]:
    """E[x_0 | x_t] for x_0 ~ N(mu, s^2 I): mu + g (x_t - alpha mu), g = alpha s^2 / (alpha^2 s^2 + sigma^2)."""
    g = alpha * s**2 / (alpha**2 * s**2 + sigma**2)
    return [m + g * (xi - alpha * m) for xi, m in zip(x, mu)]


def log_density(x: list[float], mean: list[float], var: float) -> float:
    """log N(x; mean, var I) in len(x) dimensions."""
    d2 = sum((xi - mi) ** 2 for xi, mi in zip(x, mean))
    return -0.5 * len(x) * math.log(2 * math.pi * var) - 0.5 * d2 / var


POINTS = [[0.3, 0.1], [1.2, -0.6], [-0.9, 1.4], [2.5, 2.5]]
ALPHA, SIGMA = 0.8, 0.6


def noise_level(value: float) -> torch.Tensor:
    """One float64 value per point (a Python float would pass through float32 on its way in)."""
    return torch.full((len(POINTS), 1), value, dtype=torch.float64)


# ---------------------------------------------------------------- gaussian_mixture: the exact denoiser


def test_conditional_exact_x0_is_each_components_gaussian_posterior_mean():
    data = build_mixture(**TWO)
    x = torch.tensor(POINTS, dtype=torch.float64)
    for k in (0, 1):
        out = data.exact_x0(x, noise_level(ALPHA), noise_level(SIGMA), torch.full((len(POINTS),), k))
        expected = torch.tensor(
            [single_gaussian_mean(p, MU[k], S[k], ALPHA, SIGMA) for p in POINTS], dtype=torch.float64
        )
        assert torch.allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_unconditional_exact_x0_weights_the_conditional_means_by_hand_responsibilities():
    data = build_mixture(**TWO)
    x = torch.tensor(POINTS, dtype=torch.float64)
    out = data.exact_x0(x, noise_level(ALPHA), noise_level(SIGMA))
    for row, p in zip(out, POINTS):
        # r_k proportional to w_k N(x_t; alpha mu_k, (alpha^2 s_k^2 + sigma^2) I)
        logs = [
            math.log(W[k]) + log_density(p, [ALPHA * m for m in MU[k]], ALPHA**2 * S[k] ** 2 + SIGMA**2)
            for k in (0, 1)
        ]
        top = max(logs)
        r = [math.exp(v - top) for v in logs]
        r = [v / sum(r) for v in r]
        means = [single_gaussian_mean(p, MU[k], S[k], ALPHA, SIGMA) for k in (0, 1)]
        expected = [r[0] * a + r[1] * b for a, b in zip(*means)]
        assert torch.allclose(row, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(
        out[0], data.exact_x0(x, noise_level(ALPHA), noise_level(SIGMA), torch.zeros(4, dtype=torch.int64))[0]
    )


def test_null_label_is_the_unconditional_denoiser_exactly():
    data = build_mixture(**UNEVEN_3)
    k = len(data.classes)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(9, 2, generator=g, dtype=torch.float64) * 2
    alpha = torch.rand(9, 1, generator=g, dtype=torch.float64) * 0.9 + 0.05
    sigma = torch.rand(9, 1, generator=g, dtype=torch.float64) * 2
    unconditional = data.exact_x0(x, alpha, sigma)
    null = data.exact_x0(x, alpha, sigma, torch.full((9,), null_label(k)))
    assert torch.equal(null, unconditional)
    # a batch mixing classes and the null class: each row answers its own label
    labels = torch.tensor([0, 3, 1, 3, 2, 3, 0, 1, 2])
    mixed = data.exact_x0(x, alpha, sigma, labels)
    is_null = labels == k
    assert torch.allclose(mixed[is_null], unconditional[is_null], rtol=0, atol=1e-12)
    for c in range(k):
        rows = labels == c
        alone = data.exact_x0(x[rows], alpha[rows], sigma[rows], torch.full((int(rows.sum()),), c))
        assert torch.allclose(mixed[rows], alone, rtol=0, atol=1e-12)
    assert not torch.allclose(mixed[~is_null], unconditional[~is_null])


UNEVEN_3 = {
    "components": 3,
    "means": [[1.0, 0.0], [-0.5, 0.8], [0.2, -1.1]],
    "stds": [0.1, 0.3, 0.05],
    "weights": [0.5, 0.3, 0.2],
}


def test_conditional_exact_x0_keeps_shape_dtype_and_vanishing_noise_limit():
    data = build_mixture(image_shape=[1, 4, 4], components=3, radius=0.8, std=0.2)
    x = torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    alpha = torch.full((5, 1, 1, 1), 0.9)
    out = data.exact_x0(x, alpha, torch.full((5, 1, 1, 1), 1e-9), torch.tensor([0, 1, 2, 3, 1]))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.allclose(out, x / 0.9, atol=1e-5)  # sigma -> 0: x_t / alpha, whatever the class


@pytest.mark.parametrize("labels", [[0, 3], [-1, 0], [0, 1, 2]])
def test_exact_x0_refuses_labels_outside_the_classes_or_of_the_wrong_length(labels):
    data = build_mixture(components=2, radius=1.0)
    with pytest.raises(ValueError, match="labels"):
        data.exact_x0(torch.zeros(2, 2), 0.5, 0.5, torch.tensor(labels))


# ---------------------------------------------------------------- gaussian_mixture: labelled draws


def test_draws_are_todays_stream_and_labels_are_the_components_drawn():
    """The same generator calls in the same order as before labels: multinomial for k, then randn."""
    p = mixture_params(**UNEVEN_3)
    data = REGISTRY.get("dataset", "gaussian_mixture").build(p)
    mix = mixture(p)
    for split, stream, n in ((data.train, "train", p.n_train), (data.val, "val", p.n_val)):
        g = torch.Generator().manual_seed(_stream_seed(p.seed, stream))
        k = torch.multinomial(mix.weights, n, replacement=True, generator=g)
        z = torch.randn(n, 2, generator=g, dtype=torch.float64)
        points = (mix.means[k] + mix.stds[k, None] * z).float()
        assert torch.equal(split.stored(), points)
        assert torch.equal(torch.stack([split[i][0] for i in range(n)]), points)
        assert labels_of(split) == k.tolist()
        assert torch.equal(split.stored_labels(), k)
    again = mix.sample(p.n_train, torch.Generator().manual_seed(_stream_seed(p.seed, "train")))
    assert torch.equal(again, data.train.stored())


def test_items_are_labelled_with_the_nearest_component_when_far_apart():
    data = build_mixture(components=5, radius=4.0, std=0.1)
    assert data.classes == [f"component {k}" for k in range(5)]
    means = mixture(mixture_params(components=5, radius=4.0, std=0.1)).means.float()
    x = data.train.stored()
    assert data.train.stored_labels().tolist() == torch.cdist(x, means).argmin(1).tolist()
    assert set(labels_of(data.train)) == set(range(5))
    assert isinstance(data.train, StoredLabels) and isinstance(data.val, StoredLabels)
    x0, label = next(iter(DataLoader(data.train, batch_size=8)))
    assert x0.shape == (8, 2) and item_label((x0, label)).dtype == torch.int64


def test_class_swd_is_small_for_exact_class_draws_and_large_for_wrong_labels():
    data = build_mixture(components=4, radius=2.0, std=0.2, n_val=800)
    x, labels = data.val.stored(), data.val.stored_labels()
    right = data.evaluate_classes(x, labels)["class_swd"]
    wrong = data.evaluate_classes(x, (labels + 1) % 4)["class_swd"]
    assert right < 0.05 and wrong > 1.0
    # one class alone: its distance, not diluted by the others
    rows = labels == 2
    assert data.evaluate_classes(x[rows], labels[rows])["class_swd"] < 0.05
    assert math.isnan(data.evaluate_classes(x[:3], torch.full((3,), 4))["class_swd"])  # the null class only


# ---------------------------------------------------------------- items


def test_unlabelled_items_are_tensors_and_not_stored_labels():
    data = torch.arange(12.0).reshape(6, 2)
    items = TensorItems(data)
    assert isinstance(items[2], torch.Tensor) and torch.equal(items[2], data[2])
    assert isinstance(items, StoredItems) and not isinstance(items, StoredLabels)
    images = Uint8Images(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.tensor([3, 1]))
    assert isinstance(images[0], torch.Tensor) and not isinstance(images, StoredLabels)


def test_uint8_labels_follow_the_images_through_the_indices():
    images = torch.arange(6, dtype=torch.uint8).reshape(6, 1, 1, 1).expand(6, 1, 2, 2).contiguous()
    labels = torch.tensor([5, 4, 3, 2, 1, 0])
    split = Uint8Images(images, torch.tensor([4, 0, 2]), labels=labels)
    assert isinstance(split, Uint8Images) and isinstance(split, StoredLabels)
    assert [split[i][1] for i in range(3)] == [1, 5, 3] == split.stored_labels().tolist()
    assert split[0][0].flatten().tolist() == pytest.approx([4 / 127.5 - 1] * 4, abs=1e-7)
    assert torch.equal(split.stored(), images[[4, 0, 2]])
    with pytest.raises(ValueError, match="labels"):
        Uint8Images(images, torch.tensor([0]), labels=labels[:5])
    with pytest.raises(ValueError, match="integers"):
        TensorItems(torch.zeros(6, 2), labels=labels.float())


def test_labelled_items_survive_pickling():
    split = TensorItems(torch.arange(6.0).reshape(3, 2), labels=torch.tensor([2, 0, 1]))
    copy = pickle.loads(pickle.dumps(split))
    assert type(copy) is type(split) and copy[1][1] == 0 and torch.equal(copy.stored_labels(), split.labels)


# ---------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SANDBOX_CACHE", str(tmp_path_factory.mktemp("cache")))  # not the user's cache
        component = REGISTRY.get("dataset", "digits")
        params = component.default_params()
        yield params, component.build(params)


@pytest.mark.slow
def test_digit_items_carry_sklearns_labels(digits):
    """Loading scikit-learn's digits takes a second or two on a busy machine."""
    from sklearn.datasets import load_digits

    params, data = digits
    assert data.classes == [str(d) for d in range(10)]
    target = torch.tensor(load_digits().target)
    train_idx, val_idx = carve_validation(len(target), params.val_size, params.split_seed)
    for split, idx in ((data.train, train_idx), (data.val, val_idx)):
        item = split[0]
        assert isinstance(item, tuple) and isinstance(item[1], int)
        assert labels_of(split) == target[idx].tolist() == split.stored_labels().tolist()


@pytest.mark.slow
def test_digit_class_accuracy_reads_the_requested_digit(digits):
    """Trains the scoring classifier once (a second or two on a busy machine)."""
    _params, data = digits
    x, labels = data.val.stored(), data.val.stored_labels()
    right = data.evaluate_classes(x, labels)
    wrong = data.evaluate_classes(x, (labels + 1) % 10)
    assert set(right) == {"class_accuracy"}
    assert right["class_accuracy"] > 0.9 and wrong["class_accuracy"] < 0.3
    assert data.evaluate(x).keys() == {"confident_share", "class_coverage", "mean_confidence"}


# ---------------------------------------------------------------- cifar10

PER_BATCH = 12


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    """A tiny CIFAR-10 in the official on-disk format (protocol-2 pickles of dicts with 'data' and 'labels')."""
    root = tmp_path_factory.mktemp("cifar-classes")
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    labels = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch_labels = [int(v) for v in rng.integers(0, 10, size=PER_BATCH)]
        data = np.zeros((PER_BATCH, 3072), dtype=np.uint8)
        data[:, 0] = batch_labels  # the first red byte repeats the label, so an item shows its own
        if name != "test_batch":
            labels += batch_labels
        entry = {"batch_label": name, "labels": batch_labels, "data": data, "filenames": [""] * PER_BATCH}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR_NAMES, "num_cases_per_batch": PER_BATCH, "num_vis": 3072}, f, protocol=2)
    return root, labels


def cifar(root, **overrides):
    component = REGISTRY.get("dataset", "cifar10")
    return component.build(component.params(**{"root": str(root), "verify": False, "val_size": 8, **overrides}))


def test_cifar_items_carry_the_files_labels_and_names(cifar_root):
    root, labels = cifar_root
    data = cifar(root, flip=False)
    assert data.classes == CIFAR_NAMES and data.evaluate_classes is None
    for split in (data.train, data.val):
        assert labels_of(split) == [labels[i] for i in split.indices.tolist()] == split.stored_labels().tolist()
        assert [round((float(split[i][0][0, 0, 0]) + 1) * 127.5) for i in range(len(split))] == labels_of(split)
        assert split.stored()[:, 0, 0, 0].tolist() == split.stored_labels().tolist()
    assert len(data.train) + len(data.val) == 5 * PER_BATCH


@pytest.mark.parametrize(
    "bad, why",
    [([1] * (PER_BATCH - 1), "11 labels for 12 images"), ([10] * PER_BATCH, "outside 0..9"), ("cat", "not a list")],
)
def test_cifar_batch_with_bad_labels_is_refused_on_root(cifar_root, tmp_path, bad, why):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(cifar_root[0], root)
    path = root / "cifar-10-batches-py" / "data_batch_2"
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    entry["labels"] = bad
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)
    with pytest.raises(ParameterError, match=why) as caught:
        cifar(root)
    assert "root" in str(caught.value) and "data_batch_2" in str(caught.value)
