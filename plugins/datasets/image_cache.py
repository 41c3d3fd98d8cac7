"""The images under an image folder's root, and their cache: decoded once into a memory-mapped uint8 array.

What it holds and when it is rebuilt is the **Cache** paragraph of :mod:`sandbox_plugins.datasets.image_folder`,
the dataset that reads it.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from sandbox_plugins.datasets import resize
from sandbox_plugins.datasets.params import ImageFolderParams

from sandbox.errors import ParameterError

# fmt: off
CACHE = ".sandbox-cache"     # the cache's folder inside root (hidden, so the search skips it)
CACHE_VERSION = 1            # bump when the stored pixels of the same settings change
RANDOM_CROP_MARGIN = 1.125   # crop "random": images stored this much larger than the items
POOL_MIN_FILES = 64          # fewer files than this are decoded in this process (a pool costs more to start)
# fmt: on


# ------------------------------------------------------------------------------------------------ the files


@dataclass
class Listing:
    """The images found under a root: relative POSIX paths (sorted), their ``(size, mtime_ns)``, and their labels
    when there are classes."""

    root: Path
    files: list[str]
    stats: list[tuple[int, int]]
    labels: Optional[list[int]] = None
    classes: Optional[list[str]] = None


def _walk(root: Path) -> tuple[list[tuple[str, int, int]], list[str]]:
    """``(images, others)``: ``(relative path, size, mtime_ns)`` of each image file below ``root`` (sorted), and
    the relative paths of the other files. One ``os.scandir`` pass (10,000 files: a few hundredths of a second)."""
    images: list[tuple[str, int, int]] = []
    others: list[str] = []
    seen: set[str] = set()
    stack = [("", str(root))]
    while stack:
        prefix, folder = stack.pop()
        real = os.path.realpath(folder)
        if real in seen:  # a symbolic link back up the tree
            continue
        seen.add(real)
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):  # hidden: the cache's folder among them
                    continue
                relative = prefix + entry.name
                if entry.is_dir():
                    stack.append((relative + "/", entry.path))
                elif entry.name.lower().endswith(resize.EXTENSIONS):
                    try:
                        stat = entry.stat()
                        images.append((relative, stat.st_size, stat.st_mtime_ns))
                    except OSError:  # a dangling link: it will not decode, and is listed as such
                        images.append((relative, -1, -1))
                else:
                    others.append(relative)
    return sorted(images), sorted(others)


def list_images(params: ImageFolderParams) -> Listing:
    """The images under ``params.root``; a :class:`ParameterError` when there is no folder or no image in it."""
    root = Path(params.root).expanduser()
    if not root.exists():
        raise ParameterError("root", params.root, "a folder of images, but nothing is there")
    if not root.is_dir():
        raise ParameterError("root", params.root, "a folder of images, but it is a file")
    found, others = _walk(root)
    files = [path for path, _size, _mtime in found]
    stats = [(size, mtime) for _path, size, mtime in found]
    if not files:
        held = (
            f"no image files: {len(others)} other files (such as '{others[0]}')"
            if others
            else "no files at all (it is empty)"
        )
        raise ParameterError(
            "root", params.root, f"a folder holding PNG, JPEG, WebP, BMP or TIFF files, but it holds {held}"
        )
    if not params.classes:
        return Listing(root, files, stats)
    loose = [f for f in files if "/" not in f]
    if loose:
        raise ParameterError(
            "classes",
            params.classes,
            f"every image inside a class subfolder of '{params.root}', but {len(loose)} are directly in it "
            f"(such as '{loose[0]}'); move them into a subfolder, or set classes=false",
        )
    classes = sorted({f.split("/", 1)[0] for f in files})
    number = {name: i for i, name in enumerate(classes)}
    return Listing(root, files, stats, [number[f.split("/", 1)[0]] for f in files], classes)


# ------------------------------------------------------------------------------------------------ the cache


def stored_side(params: ImageFolderParams) -> int:
    """The side of the cached images: ``resolution``, or ``round(1.125 * resolution)`` for random crops."""
    return params.resolution if params.crop == "center" else round(RANDOM_CROP_MARGIN * params.resolution)


def fingerprint(listing: Listing, params: ImageFolderParams) -> str:
    """sha256 of the files (relative path, size, modification time) and the settings that change the pixels."""
    settings = {
        "version": CACHE_VERSION,
        "side": stored_side(params),
        "channels": params.channels,
        "crop": params.crop,
        "classes": params.classes,
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    digest.update(
        "".join(f"\n{path}\0{size}\0{mtime}" for path, (size, mtime) in zip(listing.files, listing.stats)).encode()
    )
    return digest.hexdigest()[:32]


def user_cache() -> Path:
    """``$SANDBOX_CACHE``, else ``~/.cache/diffusion-sandbox`` (where the digit classifier is cached too)."""
    return Path(os.environ.get("SANDBOX_CACHE") or Path.home() / ".cache" / "diffusion-sandbox")


def cache_parents(root: Path) -> list[Path]:
    """Where a root's caches live: inside it, else in the user's cache (a folder per root, by its path's hash)."""
    tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return [root / CACHE, user_cache() / "image_folder" / tag]


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the system tells it)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def _context() -> Any:
    """``fork`` on Linux: no re-import of ``__main__`` (spawn re-imports it, which fails from a notebook or
    ``python -`` and has the pool restart failing workers without end); ``spawn`` elsewhere (macOS, Windows)."""
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def _decode_all(listing: Listing, channels: int, side: int, workers: int, store: Any) -> None:
    """Decode every file, calling ``store(row, image or None, why)`` in file order, with a progress bar."""
    from sandbox.console import console, counter

    root = str(listing.root)
    jobs = [(row, os.path.join(root, path), channels, side) for row, path in enumerate(listing.files)]
    processes = min(usable_cores() if workers == 0 else workers, len(jobs))
    pooled = processes > 1 and len(jobs) >= POOL_MIN_FILES
    console.print(
        f"decoding {len(jobs):,} images of '{listing.root}' to {side}x{side} "
        f"(once, {processes if pooled else 1} process{'es' if pooled else ''}; later runs read the cache)"
    )
    started = time.perf_counter()
    # the workers are forked before the bar's thread starts; they run only Pillow and NumPy (resize.decode)
    pool = _context().Pool(processes) if pooled else None
    try:
        with counter(console, transient=True) as progress:
            task = progress.add_task("decoding images", total=len(jobs))
            chunk = max(1, min(64, len(jobs) // (processes * 8)))
            results = pool.imap(resize.decode, jobs, chunksize=chunk) if pool else map(resize.decode, jobs)
            for result in results:
                store(*result)
                progress.advance(task)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    seconds = time.perf_counter() - started
    console.print(f"decoded {len(jobs):,} images in {seconds:.1f} s ({len(jobs) / max(seconds, 1e-9):,.0f} files/s)")


def _write(listing: Listing, params: ImageFolderParams, folder: Path) -> None:
    """Decode the files into ``folder`` (a fresh temporary folder): ``images.npy`` and ``index.json``."""
    side, channels = stored_side(params), params.channels
    path = folder / "images.npy"
    array = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.uint8, shape=(len(listing.files), channels, side, side)
    )
    good: list[int] = []
    bad: list[list[str]] = []

    def store(row: int, image: Optional[np.ndarray], why: str) -> None:
        if image is None:
            bad.append([listing.files[row], why])
        else:
            array[len(good)] = image
            good.append(row)

    _decode_all(listing, channels, side, params.workers, store)
    array.flush()
    if not good:
        first, why = bad[0]
        raise ParameterError(
            "root", params.root, f"images that decode, but none of its {len(bad)} image files does ('{first}': {why})"
        )
    if len(good) < len(listing.files):  # keep the rows that decoded, in a file of their own size
        rows = np.load(path, mmap_mode="r")
        kept = np.lib.format.open_memmap(
            folder / "kept.npy", mode="w+", dtype=np.uint8, shape=(len(good), *rows.shape[1:])
        )
        for start in range(0, len(good), 1024):
            stop = min(start + 1024, len(good))
            kept[start:stop] = rows[start:stop]
        kept.flush()
        del rows, kept
        os.replace(folder / "kept.npy", path)
    index = {
        "version": CACHE_VERSION,
        "files": [listing.files[row] for row in good],
        "labels": [listing.labels[row] for row in good] if listing.labels is not None else None,
        "classes": listing.classes,
        "bad": bad,
    }
    (folder / "index.json").write_text(json.dumps(index))


def _build_cache(listing: Listing, params: ImageFolderParams, key: str) -> Path:
    """Build the cache in the first parent that can be written; returns its folder."""
    for parent in cache_parents(listing.root):
        try:
            parent.mkdir(parents=True, exist_ok=True)
            temporary = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=parent))
        except OSError:  # a read-only root: the user's cache instead
            continue
        try:
            _write(listing, params, temporary)
            final = parent / key
            try:
                os.rename(temporary, final)
            except OSError:
                if not (final / "index.json").is_file():
                    raise
                shutil.rmtree(temporary, ignore_errors=True)  # another process built the same cache first
            return final
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
    raise ParameterError(
        "root", listing.root, f"a cache folder that can be written (tried {cache_parents(listing.root)})"
    )


def cached(listing: Listing, params: ImageFolderParams) -> tuple[Path, dict[str, Any]]:
    """The cache folder of these files and settings (built when missing) and its index."""
    key = fingerprint(listing, params)
    for parent in cache_parents(listing.root):
        folder = parent / key
        try:
            return folder, json.loads((folder / "index.json").read_text())
        except (OSError, ValueError):
            continue
    folder = _build_cache(listing, params, key)
    return folder, json.loads((folder / "index.json").read_text())
