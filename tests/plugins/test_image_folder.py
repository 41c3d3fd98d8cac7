"""image_folder (a folder of images of any size and mode, cached as uint8) and cifar10's ``resolution``.

Every test writes its own small images; the user cache (``$SANDBOX_CACHE``) is a temporary folder.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, features
from sandbox_plugins.datasets import image_cache, image_folder, resize
from sandbox_plugins.datasets.params import Cifar10Params, ImageFolderParams

from sandbox import cli
from sandbox.errors import ParameterError
from sandbox.protocols import StoredItems, StoredLabels, first_tensor, item_label

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SANDBOX_CACHE", str(tmp_path / "user-cache"))


def _pixels(rng: np.random.Generator, height: int, width: int, channels: int) -> np.ndarray:
    shape = (height, width) if channels == 1 else (height, width, channels)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def write_mixed(folder: Path, seed: int = 0) -> list[str]:
    """One image of each mode and format, of mixed sizes; returns their names (relative paths)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images = {
        "grey.png": Image.fromarray(_pixels(rng, 14, 20, 1), "L"),
        "rgb.png": Image.fromarray(_pixels(rng, 17, 11, 3), "RGB"),
        "alpha.png": Image.fromarray(_pixels(rng, 16, 16, 4), "RGBA"),
        "palette.png": Image.fromarray(_pixels(rng, 9, 13, 3), "RGB").convert("P"),
        "deep.png": Image.fromarray(rng.integers(0, 65536, size=(12, 10), dtype=np.uint16)),
        "photo.jpg": Image.fromarray(_pixels(rng, 18, 24, 3), "RGB"),
        "UPPER.JPEG": Image.fromarray(_pixels(rng, 10, 10, 3), "RGB"),
        "plain.bmp": Image.fromarray(_pixels(rng, 9, 9, 3), "RGB"),
        "scan.tif": Image.fromarray(_pixels(rng, 10, 15, 3), "RGB"),
        "nested/deeper/small.png": Image.fromarray(_pixels(rng, 5, 7, 3), "RGB"),
    }
    if features.check("webp"):
        images["web.webp"] = Image.fromarray(_pixels(rng, 12, 12, 3), "RGB")
    for name, image in images.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        image.save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    return sorted(images)


def write_plain(folder: Path, names: list[str], seed: int = 0, size: tuple[int, int] = (12, 10)) -> None:
    rng = np.random.default_rng(seed)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_pixels(rng, size[1], size[0], 3), "RGB").save(folder / name)


def params(root: Path, **overrides) -> ImageFolderParams:
    return ImageFolderParams(**{"root": str(root), "resolution": 8, "val_fraction": 0.3, "workers": 1, **overrides})


def names_of(split, built_params: ImageFolderParams) -> list[str]:
    """The relative paths of a split's images, item by item (through the cache's index)."""
    _folder, index = image_cache.cached(image_cache.list_images(built_params), built_params)
    return [index["files"][int(i)] for i in split.indices]


def files_of(split, root: Path, built_params: ImageFolderParams) -> set[str]:
    return set(names_of(split, built_params))


@pytest.fixture
def count_decodes(monkeypatch):
    calls = []
    original = resize.decode

    def counting(job):
        calls.append(job[1])
        return original(job)

    monkeypatch.setattr(resize, "decode", counting)
    return calls


# ------------------------------------------------------------------------------------------------ the images


@pytest.mark.parametrize("channels", [1, 3])
def test_mixed_sizes_and_modes_become_square_items_in_range(tmp_path, channels):
    names = write_mixed(tmp_path / "images")
    data = image_folder.build(params(tmp_path / "images", channels=channels))
    assert data.shape == (channels, 8, 8)
    assert len(data.train) + len(data.val) == len(names) and len(data.val) > 0
    assert isinstance(data.train, StoredItems) and not isinstance(data.train, StoredLabels)
    assert data.train.stored().dtype == torch.uint8
    for split in (data.train, data.val):
        items = torch.stack([split[i] for i in range(len(split))])
        assert items.dtype == torch.float32 and items.shape[1:] == data.shape
        assert items.min() >= -1 and items.max() <= 1
    assert data.classes is None and "image folder" in data.description
    assert data.cache_dir and Path(data.cache_dir).parent == tmp_path / "images" / image_cache.CACHE


def test_modes_are_converted_by_the_stated_rule():
    deep = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16))
    assert np.asarray(resize.convert(deep, 1)).tolist() == [[0, 128, 255]]
    wide = Image.fromarray(np.array([[0, 65535]], dtype=np.int32), "I")
    assert np.asarray(resize.convert(wide, 1)).tolist() == [[0, 255]]
    clear = Image.new("RGBA", (2, 2), (10, 20, 30, 0))  # transparent: composited onto white
    assert np.asarray(resize.convert(clear, 3))[0, 0].tolist() == [255, 255, 255]
    grey = resize.convert(Image.new("RGB", (2, 2), (255, 255, 255)), 1)
    assert grey.mode == "L" and np.asarray(grey).min() == 255


def test_the_shorter_side_is_resized_and_the_longer_centre_cropped():
    stripes = np.zeros((10, 30, 3), dtype=np.uint8)
    stripes[:, :10, 0] = stripes[:, 10:20, 1] = stripes[:, 20:, 2] = 255  # red | green | blue
    fitted = np.asarray(resize.fit(Image.fromarray(stripes), 5))
    assert fitted.shape == (5, 5, 3)
    green = np.broadcast_to(np.array([0, 255, 0]), fitted.shape)
    error = np.abs(fitted.astype(int) - green)
    assert error[:, 1:4].max() <= 3 and error.max() <= 16  # the green centre square (Lanczos' support: border columns)
    assert resize.fit(Image.fromarray(stripes[:, :10]), 10).tobytes() == stripes[:, :10].tobytes()


def test_a_seed_gives_the_same_items_and_split_another_seed_another_split(tmp_path):
    write_plain(tmp_path / "images", [f"{i:02d}.png" for i in range(40)])
    first = image_folder.build(params(tmp_path / "images"))
    again = image_folder.build(params(tmp_path / "images"))
    assert torch.equal(first.val.indices, again.val.indices)
    assert torch.equal(first.train.stored(), again.train.stored())
    other = image_folder.build(params(tmp_path / "images", split_seed=1))
    assert not torch.equal(first.val.indices, other.val.indices)


def test_the_split_does_not_move_when_files_are_added(tmp_path):
    root = tmp_path / "images"
    write_plain(root, [f"a{i:02d}.png" for i in range(30)])
    before = params(root)
    data = image_folder.build(before)
    val, train = files_of(data.val, root, before), files_of(data.train, root, before)
    write_plain(root, [f"b{i:02d}.png" for i in range(30)] + ["a00x.png", "0.png"], seed=1)
    after = image_folder.build(before)
    assert len(after.train) + len(after.val) == 62
    assert val <= files_of(after.val, root, before) and train <= files_of(after.train, root, before)


def test_the_cache_is_reused_and_rebuilt_when_a_file_changes(tmp_path, count_decodes):
    root = tmp_path / "images"
    write_plain(root, [f"{i}.png" for i in range(12)])
    data = image_folder.build(params(root))
    assert len(count_decodes) == 12
    image_folder.build(params(root, val_fraction=0.5, split_seed=3, flip=True))  # the split: same cache
    assert len(count_decodes) == 12 and len(list((root / image_cache.CACHE).iterdir())) == 1
    stat = (root / "3.png").stat()
    os.utime(root / "3.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # touched
    changed = image_folder.build(params(root))
    assert len(count_decodes) == 24 and changed.cache_dir != data.cache_dir
    assert torch.equal(changed.train.stored(), data.train.stored())  # same pixels, new fingerprint
    write_plain(root, ["3.png"], seed=5, size=(20, 20))  # rewritten, another size
    image_folder.build(params(root))
    assert len(count_decodes) == 36
    image_folder.build(params(root))
    assert len(count_decodes) == 36
    (root / "5.png").unlink()  # removed
    removed = image_folder.build(params(root))
    assert len(count_decodes) == 47 and len(removed.train) + len(removed.val) == 11
    image_folder.build(params(root, resolution=6))  # another setting of the pixels
    assert len(count_decodes) == 58


def test_a_read_only_root_caches_in_the_user_cache(tmp_path):
    root = tmp_path / "images"
    write_plain(root, [f"{i}.png" for i in range(6)])
    (root / image_cache.CACHE).write_text("a file where the cache folder would go: mkdir fails as on read-only disks")
    data = image_folder.build(params(root))
    assert data.cache_dir and Path(data.cache_dir).is_relative_to(tmp_path / "user-cache")


def test_a_file_that_does_not_decode_is_named_or_skipped_with_a_count(tmp_path, count_decodes, capsys):
    root = tmp_path / "images"
    write_plain(root, [f"{i}.png" for i in range(8)])
    for name in ("broken.png", "empty.jpg", "text.tif"):
        (root / name).write_bytes(b"" if name == "empty.jpg" else b"not an image at all")
    with pytest.raises(ParameterError) as refused:
        image_folder.build(params(root))
    message = str(refused.value.in_section("dataset"))
    assert "'dataset.root'" in message and "3 of its 11 image files do not" in message
    assert "'broken.png'" in message and "skip_bad=true" in message
    capsys.readouterr()
    skipped = image_folder.build(params(root, skip_bad=True))
    assert "skip_bad: skipping 3 of the 11 image files" in " ".join(capsys.readouterr().out.split())
    assert len(count_decodes) == 11  # the cache of the first try is reused
    assert len(skipped.train) + len(skipped.val) == 8 and "skipped 3 files that do not decode" in skipped.description
    assert skipped.train.stored().shape[1:] == (3, 8, 8)


def test_classes_are_the_first_level_subfolders(tmp_path):
    root = tmp_path / "images"
    write_plain(root, [f"dog/{i}.png" for i in range(8)] + [f"cat/x/{i}.png" for i in range(8)])
    data = image_folder.build(params(root, classes=True))
    assert data.classes == ["cat", "dog"]
    assert isinstance(data.train, StoredLabels)
    names = names_of(data.train, params(root, classes=True))
    labels = [int(item_label(data.train[i])) for i in range(len(data.train))]
    assert labels == [0 if name.startswith("cat/") else 1 for name in names] and set(labels) == {0, 1}
    stored = data.train.stored_labels()
    assert stored.dtype == torch.int64 and len(stored) == len(data.train)
    write_plain(root, ["loose.png"])
    with pytest.raises(ParameterError, match=r"loose\.png"):
        image_folder.build(params(root, classes=True))


def test_random_crops_are_windows_of_a_larger_stored_image(tmp_path):
    root = tmp_path / "images"
    write_plain(root, [f"{i}/{j}.png" for i in range(2) for j in range(8)], size=(30, 20))
    data = image_folder.build(params(root, crop="random", flip=True, classes=True))
    stored = data.train.stored()
    assert stored.shape[1:] == (3, 9, 9) and data.shape == (3, 8, 8)
    first, label = data.train[0]
    assert first.shape == (3, 8, 8) and label in (0, 1)
    decoded = data.train.decode(stored, torch.Generator().manual_seed(0))
    assert decoded.shape == (len(stored), 3, 8, 8)
    assert torch.equal(decoded, data.train.decode(stored, torch.Generator().manual_seed(0)))
    scaled = stored.float() / 127.5 - 1
    corners = [(top, left) for top in range(2) for left in range(2)]
    for x, image in zip(decoded, scaled):  # each a window of its image, mirrored or not
        assert any(
            torch.equal(x, w) or torch.equal(x, w.flip(-1))
            for w in (image[:, t : t + 8, c : c + 8] for t, c in corners)
        )
    centre = data.val[0][0]
    assert torch.equal(centre, data.val.stored()[0, :, :8, :8].float() / 127.5 - 1)
    assert torch.equal(pickle.loads(pickle.dumps(data.val))[0][0], centre)


def test_a_pool_of_processes_stores_what_one_process_does(tmp_path, monkeypatch):
    root = tmp_path / "images"
    names = write_mixed(root)
    (root / "broken.png").write_bytes(b"not an image")
    alone = image_folder.build(params(root, skip_bad=True)).train.stored()
    shutil.rmtree(root / image_cache.CACHE)
    monkeypatch.setattr(image_cache, "POOL_MIN_FILES", 0)
    pooled = image_folder.build(params(root, workers=2, skip_bad=True))
    assert torch.equal(pooled.train.stored(), alone)
    assert pooled.cache_dir
    index = json.loads((Path(pooled.cache_dir) / "index.json").read_text())
    assert index["files"] == names and [path for path, _why in index["bad"]] == ["broken.png"]


@pytest.mark.slow
def test_a_pool_works_where_main_is_no_file(tmp_path):
    """From ``python -`` (or a notebook) the decoding workers must not need to re-import ``__main__``."""
    write_plain(tmp_path / "images", [f"{i}.png" for i in range(8)])
    script = (
        "from sandbox_plugins.datasets import image_cache, image_folder\n"
        "from sandbox_plugins.datasets.params import ImageFolderParams\n"
        "image_cache.POOL_MIN_FILES = 0\n"
        f"data = image_folder.build(ImageFolderParams(root={str(tmp_path / 'images')!r}, resolution=8, workers=2,"
        " val_fraction=0.5))\n"
        "print('items', len(data.train) + len(data.val))\n"
    )
    done = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "items 8" in done.stdout and "2 processes" in done.stdout, done.stderr[-2000:]


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"resolution": 0}, "resolution"),
        ({"channels": 2}, "channels"),
        ({"crop": "rand"}, "crop"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"workers": -1}, "workers"),
    ],
)
def test_bad_params_name_their_field(values, message):
    with pytest.raises(ParameterError) as refused:
        ImageFolderParams(**values)
    assert refused.value.key == message


def _refused(capsys, tmp_path, *overrides: str) -> str:
    output = tmp_path / "runs"
    code = cli.main(["run", str(QUICKSTART), "dataset.name=image_folder", f"run.output={output}", *overrides])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "Traceback" not in err
    assert not output.exists() or not any(output.iterdir())
    return err


def test_a_missing_empty_or_imageless_folder_is_one_message_before_any_work(tmp_path, capsys):
    assert "'dataset.root'" in _refused(capsys, tmp_path, f"dataset.root={tmp_path / 'nowhere'}")
    (tmp_path / "empty").mkdir()
    err = _refused(capsys, tmp_path, f"dataset.root={tmp_path / 'empty'}")
    assert "'dataset.root'" in err and "empty" in err
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("words")
    err = _refused(capsys, tmp_path, f"dataset.root={tmp_path / 'text'}")
    assert "'dataset.root'" in err and "no image files" in err and "a.txt" in err
    err = _refused(capsys, tmp_path, f"dataset.root={tmp_path / 'text'}", "dataset.resolution=0")
    assert "'dataset.resolution'" in err


# ------------------------------------------------------------------------------------------------ end to end

TINY = [
    "denoiser.channels=8",
    "denoiser.channel_mult=[1,2]",
    "denoiser.attention_resolutions=[]",
    "denoiser.groups=4",
    "train.steps=3",
    "train.batch_size=8",
    "train.log_every=1",
    "train.val_every=0",
    "train.warmup_steps=1",
    "eval.val_batches=1",
    "eval.num_samples=4",
    "eval.sample_batch=4",
    "sampler.steps=2",
    "run.threads=1",
    "run.device=cpu",
]


@pytest.mark.slow
@pytest.mark.parametrize("conditional", [False, True])
def test_a_few_training_steps_on_a_folder_of_mixed_images(tmp_path, conditional):
    root = tmp_path / "images"
    for label in ("a", "b"):
        write_mixed(root / label, seed=len(label) + ord(label))
    output = tmp_path / "runs"
    section = f"dataset={{name: image_folder, root: {root}, resolution: 8, channels: 1, classes: {conditional}}}"
    args = ["run", str(QUICKSTART), section, *TINY, f"run.output={output}", f"train.conditional={conditional}"]
    assert cli.main(args) == 0
    (run,) = output.iterdir()
    samples = torch.load(run / "samples" / "final.pt", weights_only=True)
    assert first_tensor(samples).shape[1:] == (1, 8, 8)


# ------------------------------------------------------------------------------------------------ cifar10 resized


@pytest.fixture(scope="module")
def fake_cifar(tmp_path_factory) -> Path:
    """A tiny CIFAR-10 in the on-disk format (see tests/plugins/test_datasets.py): 6 images per batch."""
    root = tmp_path_factory.mktemp("cifar")
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {
            "data": rng.integers(0, 256, size=(6, 3072), dtype=np.uint8),
            "labels": [int(v) for v in rng.integers(0, 10, size=6)],
            "batch_label": name,
            "filenames": [f"{i}.png" for i in range(6)],
        }
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}, protocol=2))
    return root


def test_cifar10_takes_a_resolution_and_32_keeps_the_bytes(fake_cifar):
    from sandbox_plugins.datasets import cifar10

    native = cifar10.build(Cifar10Params(root=str(fake_cifar), verify=False, val_size=5))
    same = cifar10.build(Cifar10Params(root=str(fake_cifar), verify=False, val_size=5, resolution=32))
    images, _ = cifar10.load_images(Cifar10Params(root=str(fake_cifar), verify=False, val_size=5))
    assert native.shape == (3, 32, 32) and torch.equal(native.train.images, images)
    assert torch.equal(same.train.stored(), native.train.stored())
    small = cifar10.build(Cifar10Params(root=str(fake_cifar), verify=False, val_size=5, resolution=16))
    assert small.shape == (3, 16, 16) and "16x16" in small.description
    x, label = small.train[0]
    assert x.shape == (3, 16, 16) and x.min() >= -1 and x.max() <= 1 and label == native.train[0][1]
    assert torch.equal(small.train.indices, native.train.indices)
    with pytest.raises(ParameterError):
        Cifar10Params(resolution=0)
