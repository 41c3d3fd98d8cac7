"""FID and KID (``eval.metrics``): the metric code with a small injected feature extractor, the cached
reference statistics, the checks before any work, and the Inception path (skipped without its weights)."""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import pytest
import torch

from sandbox import cli
from sandbox.engine import fid
from sandbox.protocols import DataSplits
from sandbox.tools.summary import CellResult
from sandbox.tools.summary.stats import resolve_metrics

pytest.importorskip("torchmetrics", reason="the fid extra is not installed: pip install -e '.[fid]'")
pytestmark = pytest.mark.usefixtures("one_thread")  # many small matrix products: one thread is faster

QUICK = [  # the digits (1, 8, 8) with a small network: a run of a few seconds
    "run",
    str(Path(__file__).resolve().parents[2] / "recipes" / "quickstart.yaml"),
    "denoiser.name=mlp",
    "train.steps=2",
    "train.val_every=0",
    "eval.val_batches=1",
    "eval.num_samples=32",
    "sampler.steps=2",
    "run.device=cpu",
]


class Projection:
    """A deterministic feature extractor: a fixed random projection of the pixels, then tanh; counts images."""

    def __init__(self, pixels: int = 64, dim: int = 16, name: str = "test-projection"):
        self.weight = torch.randn(pixels, dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        self.name, self.seen = name, 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.seen += len(images)
        return torch.tanh(images.flatten(1).double() @ self.weight / 4)

    def features(self, batch_size: int = 100) -> fid.Features:
        return fid.Features(self.name, self, batch_size)


def images(n: int = 600, seed: int = 0) -> torch.Tensor:
    """Smooth grey 8x8 images in [-1, 1]: a low-rank random field, so the features have structure."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(6, 64, generator=g, dtype=torch.float64)
    return torch.tanh(torch.randn(n, 6, generator=g, dtype=torch.float64) @ basis / 3).reshape(n, 1, 8, 8)


def stats(features: fid.Features, x: torch.Tensor) -> fid.Statistics:
    return fid.statistics(features, fid.batches(x, features.batch_size), len(x))


# ------------------------------------------------------------------------------------------------ the metrics


def test_fid_and_kid_of_a_set_against_itself_are_about_zero_and_grow_with_noise(monkeypatch):
    monkeypatch.setattr(fid, "KID_SUBSETS", 20)
    features = Projection().features()
    real = images(200)
    reference = stats(features, real)
    noise = torch.randn(real.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    fids, kids = [], []
    for level in (0.0, 0.05, 0.2, 0.5, 1.0):
        noisy = stats(features, real + level * noise)
        fids.append(fid.frechet_distance(reference, noisy))
        kids.append(fid.kernel_distance(reference, noisy)[0])
    assert abs(fids[0]) < 1e-9, fids
    assert all(a < b for a, b in zip(fids, fids[1:])), fids
    assert all(a < b for a, b in zip(kids, kids[1:])), kids
    # KID's estimator is unbiased for independent sets; with one set of m on both sides it is exactly
    # -2 (mean k(x, x) - mean k(x, y)) / (m - 1), slightly below 0
    k = (reference.pool.double() @ reference.pool.double().T / 16 + 1) ** 3
    m = len(k)
    assert kids[0] == pytest.approx(float(-2 * (k.diagonal().mean() - k.mean()) / (m - 1)), rel=1e-9)
    fresh = fid.kernel_distance(reference, stats(features, images(400)[200:]))[0]
    assert abs(fresh) < 0.2 * kids[-1], (fresh, kids)  # another draw of the same distribution: about 0


def _exact(mean: torch.Tensor, cov: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` points whose empirical mean and (n - 1)-normalised covariance are exactly ``mean`` and ``cov``."""
    z = torch.randn(n, len(mean), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    z = z - z.mean(0)
    z = z @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(z.T))).T  # empirical covariance I
    return mean + z @ torch.linalg.cholesky(cov).T


def test_fid_matches_the_closed_form_of_two_gaussians():
    """FID = |mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1^(1/2) S_2 S_1^(1/2))^(1/2)) (Heusel et al. 2017, eq. 6)."""
    import scipy.linalg

    identity = fid.Features("identity", lambda x: x.flatten(1), batch_size=64)
    d = 6
    mu_1, mu_2 = torch.zeros(d, dtype=torch.float64), torch.linspace(-1, 1, d, dtype=torch.float64)
    a, b = torch.linspace(0.5, 2.0, d, dtype=torch.float64), torch.linspace(3.0, 0.2, d, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    cases = [(torch.diag(a), torch.diag(b)), (q @ torch.diag(a) @ q.T, torch.diag(b))]  # commuting, then not
    for s_1, s_2 in cases:
        x_1, x_2 = _exact(mu_1, s_1, 300, 1), _exact(mu_2, s_2, 200, 2)
        root = scipy.linalg.sqrtm(scipy.linalg.sqrtm(s_1.numpy()) @ s_2.numpy() @ scipy.linalg.sqrtm(s_1.numpy()))
        expected = float((mu_1 - mu_2).square().sum() + torch.trace(s_1 + s_2) - 2 * root.real.trace())
        got = fid.frechet_distance(stats(identity, x_1), stats(identity, x_2))
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-8)
    # the commuting case by hand: sum (sqrt a - sqrt b)^2 for the covariance term
    x_1, x_2 = _exact(mu_1, torch.diag(a), 300, 1), _exact(mu_2, torch.diag(b), 200, 2)
    by_hand = float((mu_1 - mu_2).square().sum() + (a.sqrt() - b.sqrt()).square().sum())
    assert fid.frechet_distance(stats(identity, x_1), stats(identity, x_2)) == pytest.approx(by_hand, rel=1e-6)


def test_kid_is_the_unbiased_mmd_with_the_cubic_kernel():
    """With subsets as large as the sets, every subset is the whole set: KID is the full unbiased MMD^2
    with k(x, y) = (x.y / d + 1)^3 (Binkowski et al. 2018, eq. 4)."""
    identity = fid.Features("identity", lambda x: x.flatten(1), batch_size=64)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 5, generator=g, dtype=torch.float64), 0.5 + torch.randn(40, 5, generator=g).double()
    k = lambda u, v: (u @ v.T / 5 + 1) ** 3
    m = len(x)
    off = lambda kk: (kk.sum() - kk.diagonal().sum()) / (m * (m - 1))
    expected = float(off(k(x, x)) + off(k(y, y)) - 2 * k(x, y).mean())
    mean, std = fid.kernel_distance(stats(identity, x.float()), stats(identity, y.float()))
    assert mean == pytest.approx(expected, rel=1e-5) and std == pytest.approx(0.0, abs=1e-6)


def test_the_kid_pool_is_a_bounded_seeded_subset(monkeypatch):
    monkeypatch.setattr(fid, "KID_POOL", 50)
    features = Projection().features(batch_size=64)
    first, again = stats(features, images(300)), stats(features, images(300))
    assert first.pool.shape == (50, 16) and torch.equal(first.pool, again.pool)
    assert first.count == 300 and first.outer.shape == (16, 16)


def test_a_wrong_feature_shape_is_named():
    bad = fid.Features("flat", lambda x: x.flatten(), batch_size=10)
    with pytest.raises(fid.SandboxError, match="feature extractor 'flat' returned shape"):
        stats(bad, images(20))


# ------------------------------------------------------------------------------------------------ the cache


def splits(n: int = 300, cache_dir: Path | None = None) -> DataSplits:
    x = images(n).float()
    return DataSplits(
        train=list(x), val=list(x[:50]), shape=(1, 8, 8), cache_dir=str(cache_dir) if cache_dir else None
    )


def test_the_reference_is_computed_once_and_cached_under_a_key(tmp_path):
    extractor = Projection()
    dataset = {"name": "digits", "size": 8}
    first, path = fid.reference(splits(), dataset, extractor.features(), tmp_path / "fallback")
    assert extractor.seen == 300 and path.parent == tmp_path / "fallback" and path.exists()
    again, same = fid.reference(splits(), dataset, extractor.features(), tmp_path / "fallback")
    assert extractor.seen == 300, "the second call must not extract features of the reference"
    assert same == path and torch.equal(again.total, first.total) and torch.equal(again.pool, first.pool)

    other_data = fid.reference(splits(), {"name": "digits", "size": 16}, extractor.features(), tmp_path / "fallback")
    other_features = Projection(name="another").features()
    other_extractor = fid.reference(splits(), dataset, other_features, tmp_path / "fallback")
    other_size = fid.reference(splits(200), dataset, extractor.features(), tmp_path / "fallback")
    paths = {path, other_data[1], other_extractor[1], other_size[1]}
    assert len(paths) == 4 and all(p.exists() for p in paths)
    assert extractor.seen == 300 + 300 + 200 and other_features.extract.seen == 300


def test_the_reference_is_cached_beside_the_data_when_the_dataset_names_a_folder(tmp_path):
    _, path = fid.reference(splits(cache_dir=tmp_path / "data"), {"name": "x"}, Projection().features(), tmp_path)
    assert path.parent == tmp_path / "data" / fid.CACHE_FOLDER and path.exists()


def test_a_torn_cache_file_is_computed_again(tmp_path):
    extractor = Projection()
    first, path = fid.reference(splits(), {"name": "x"}, extractor.features(), tmp_path)
    path.write_bytes(path.read_bytes()[:1000])  # torn by a crash
    with pytest.warns(UserWarning, match="unreadable"):
        again, _ = fid.reference(splits(), {"name": "x"}, extractor.features(), tmp_path)
    assert extractor.seen == 600 and torch.equal(again.total, first.total)
    assert fid.load_cached(path, fid.reference_key({"name": "x"}, splits(), extractor.features())) is not None


# ------------------------------------------------------------------------------------------------ runs


@pytest.fixture
def injected(monkeypatch):
    """The runs' extractor replaced by a small projection (what a machine without the weights can run)."""
    extractor = Projection()
    monkeypatch.setattr(fid, "inception", lambda device: extractor.features(batch_size=500))
    monkeypatch.setattr(fid, "inception_weights", lambda metrics=("fid",): Path("weights"))
    return extractor


def _only_folder(parent: Path) -> Path:
    (folder,) = [p for p in parent.iterdir() if p.name != fid.CACHE_FOLDER]
    return folder


def test_a_run_and_sandbox_sample_report_fid_and_kid_with_one_reference(tmp_path, injected):
    out = tmp_path / "runs"
    assert cli.main([*QUICK, "eval.metrics=[fid,kid]", f"run.output={out}"]) == 0
    assert injected.seen == 1500 + 32 + 32  # the training split once, then the samples and held-out digits
    run = _only_folder(out)
    quality = json.loads((run / "summary.json").read_text())["sample_quality"]
    assert list(quality["generated"])[:2] == ["fid", "kid"] and "confident_share" in quality["generated"]
    assert quality["generated"]["fid"] > quality["real_heldout"]["fid"] >= 0  # 2 training steps: far from the data
    info = quality["image_metrics"]
    assert info["features"] == "test-projection" and info["reference"]["items"] == 1500
    assert Path(info["reference"]["cache"]).parent == out / fid.CACHE_FOLDER
    assert info["generated"]["items"] == 32 and info["generated"]["kid_subset_size"] == 32

    seen = injected.seen
    assert cli.main(["sample", str(run), "--num", "48"]) == 0
    assert injected.seen == seen + 48 + 48, "sandbox sample reuses the run's cached reference"
    summaries = [json.loads(p.read_text()) for p in (run / "samples").glob("*/summary.json")]
    assert len(summaries) == 1 and summaries[0]["sample_quality"]["generated"]["fid"] > 0
    assert summaries[0]["sample_quality"]["image_metrics"]["generated"]["items"] == 48


def test_summaries_rank_by_fid_then_kid_when_cells_have_them():
    values = {"sample_quality.generated.confident_share": 0.9, "sample_quality.generated.kid": 0.01}
    values["sample_quality.generated.fid"] = 12.0
    metrics = resolve_metrics(None, [CellResult("a", ("x",), 0, "done", values=values)])
    assert [m.label for m in metrics[:3]] == ["generated.fid", "generated.kid", "generated.confident_share"]
    assert metrics[0].lower_is_better and metrics[1].lower_is_better and not metrics[2].lower_is_better


# ------------------------------------------------------------------------------------------------ before any work


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return " ".join(err.split())  # rich may wrap


def test_missing_weights_stop_the_run_before_training_with_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(fid.WEIGHTS_ENV, raising=False)
    out = tmp_path / "runs"
    assert cli.main([*QUICK, "eval.metrics=[fid]", f"run.output={out}"]) == 2
    message = _error(capsys)
    destination = tmp_path / "torch" / "hub" / "checkpoints" / fid.WEIGHTS_FILE
    assert "recipe key 'eval.metrics'" in message and fid.WEIGHTS_URL in message
    assert str(destination) in message and fid.WEIGHTS_ENV in message
    assert not out.exists(), "nothing may be written before the check"

    monkeypatch.setenv(fid.WEIGHTS_ENV, str(tmp_path / "elsewhere.pth"))
    assert cli.main([*QUICK, "eval.metrics=[kid]", f"run.output={out}"]) == 2
    message = _error(capsys)
    assert f"{tmp_path / 'elsewhere.pth'} (${fid.WEIGHTS_ENV})" in message and fid.WEIGHTS_URL in message


def test_a_missing_extra_names_the_install_command(tmp_path, monkeypatch, capsys):
    real = fid.importlib.util.find_spec
    monkeypatch.setattr(fid.importlib.util, "find_spec", lambda name: None if name == "torchmetrics" else real(name))
    assert cli.main([*QUICK, "eval.metrics=[fid]", f"run.output={tmp_path}"]) == 2
    message = _error(capsys)
    assert fid.EXTRA in message and "torchmetrics" in message and fid.WEIGHTS_FILE in message


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (
            ["eval.metrics=[fdi]"],
            "recipe key 'eval.metrics': ['fdi']; expected a list of distinct names from fid, kid",
        ),
        (["eval.metrics=[fid,fid]"], "expected a list of distinct names"),
        (["dataset.name=toy2d", "eval.metrics=[fid]"], "needs images of shape (C, H, W) with 1 or 3 channels"),
    ],
)
def test_bad_metric_settings_exit_2(tmp_path, capsys, overrides, fragment):
    assert cli.main([*QUICK, *overrides, f"run.output={tmp_path}"]) == 2
    assert fragment in _error(capsys)


def test_an_unreadable_weights_file_is_named(tmp_path, monkeypatch):
    bad = tmp_path / fid.WEIGHTS_FILE
    bad.write_bytes(b"not a torch file")
    monkeypatch.setenv(fid.WEIGHTS_ENV, str(bad))
    with pytest.raises(fid.RecipeError, match="is not a readable copy"):
        fid.inception_weights()


# ------------------------------------------------------------------------------------------------ Inception


def test_the_weights_url_is_the_one_the_library_loads():
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    assert fid.WEIGHTS_URL == URL_INCEPTION_V3


@pytest.mark.slow
def test_the_inception_path_runs_grey_and_colour_images_with_a_weights_file(tmp_path, monkeypatch):
    """The wiring (weights check, 8-bit input, grey to RGB, resize, 2048 features) with a randomly initialised
    network saved in the weights file's format: what the real weights go through, without a download."""
    from torch_fidelity import feature_extractor_inceptionv3 as tf

    with (
        mock.patch.object(tf, "load_state_dict_from_url", return_value={}),
        mock.patch.object(tf.FeatureExtractorInceptionV3, "load_state_dict"),
    ):
        net = tf.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = tmp_path / fid.WEIGHTS_FILE
    torch.save(net.state_dict(), path)
    monkeypatch.setenv(fid.WEIGHTS_ENV, str(path))
    features = fid.inception(torch.device("cpu"))
    grey = features.extract(images(2).float())
    colour = features.extract(images(2).float().expand(-1, 3, -1, -1))
    assert grey.shape == (2, 2048) and torch.isfinite(grey).all()
    assert torch.allclose(grey, colour, atol=1e-5), "grey images are their RGB repetition"


@pytest.mark.skipif(
    not (fid.hub_weights().is_file() or Path(fid.os.environ.get(fid.WEIGHTS_ENV, "/nonexistent")).is_file()),
    reason=f"the Inception-v3 weights are not on this machine: put {fid.WEIGHTS_FILE} ({fid.WEIGHTS_URL}) "
    f"at {fid.hub_weights()} or set {fid.WEIGHTS_ENV}",
)
def test_inception_with_the_real_weights():
    features = fid.inception(torch.device("cpu"))
    x = images(8).float()
    feats = features.extract(x)
    assert feats.shape == (8, 2048) and (feats >= 0).all()  # pool features after ReLU
    a = fid.statistics(features, fid.batches(x, 4), 8)
    noisy = fid.statistics(features, fid.batches((x + 0.5 * torch.randn_like(x)).clamp(-1, 1), 4), 8)
    assert abs(fid.frechet_distance(a, a)) < 1e-3 < fid.frechet_distance(a, noisy)


def test_scoring_on_one_rank_of_a_process_group_does_not_wait_for_the_others(monkeypatch):
    """Under torchrun rank 0 alone scores: the metrics must not gather their states across ranks."""
    features = Projection().features()
    a, b = stats(features, images(100)), stats(features, images(200)[100:])
    monkeypatch.setattr(torch.distributed, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)  # a gather would now fail
    assert fid.frechet_distance(a, b) > 0 and fid.kernel_distance(a, b)[0] is not None
