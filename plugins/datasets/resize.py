"""The one rule that brings an image of any size and mode to a square of the recipe's resolution.

Shared by ``image_folder`` and ``cifar10``'s ``resolution``. Torch-free (Pillow and NumPy only), so
decoding processes start fast.

* **Mode.** Any Pillow mode becomes ``"L"`` (1 channel, ITU-R 601-2 luma) or ``"RGB"`` (3 channels).
  Transparent pixels (``RGBA``, ``LA``, a palette with transparency) are composited onto white. 16-bit
  images (``I;16``, and ``I`` holding values above 255) are scaled by 255 / 65535, rounded; float images
  (``F``) are read as [0, 1] when no value exceeds 1, else as [0, 255]. A JPEG's EXIF orientation is applied.
* **Size.** The shorter side is resized to ``size`` and the longer side centre-cropped to it, in one
  antialiased Lanczos resampling of the centred square (Pillow's ``resize(..., box=...)``, so no pixel is
  rounded twice). An image already ``size x size`` is returned unchanged.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

#: file name endings searched for (lower case; matched case-insensitively)
EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _eight_bit(image: Image.Image) -> Image.Image:
    """An ``I;16*``, ``I`` or ``F`` image as ``"L"``, scaled down to 0..255."""
    values = np.asarray(image).astype(np.float64)
    peak = float(values.max()) if values.size else 0.0
    if image.mode.startswith("I;16") or (image.mode == "I" and peak > 255):
        scale = 255.0 / 65535.0
    elif image.mode == "F" and peak <= 1.0:
        scale = 255.0
    else:
        scale = 1.0
    return Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8), "L")


def convert(image: Image.Image, channels: int) -> Image.Image:
    """``image`` in mode ``"L"`` (``channels`` 1) or ``"RGB"`` (``channels`` 3), by the rule above."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _eight_bit(image)
    elif image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    target = "L" if channels == 1 else "RGB"
    return image if image.mode == target else image.convert(target)


def fit(image: Image.Image, size: int) -> Image.Image:
    """The shorter side resized to ``size``, the longer centre-cropped: one Lanczos resampling (antialiased)."""
    width, height = image.size
    if (width, height) == (size, size):
        return image
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return image.resize((size, size), Image.Resampling.LANCZOS, box=(left, top, left + side, top + side))


def to_array(image: Image.Image) -> np.ndarray:
    """An ``"L"`` or ``"RGB"`` image as ``uint8 [C, H, W]``."""
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def load(path: str, channels: int, size: int) -> np.ndarray:
    """The file at ``path`` decoded, converted and fitted: ``uint8 [channels, size, size]``; raises on a bad file."""
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened)
        image.load()
        return to_array(fit(convert(image, channels), size))


def decode(job: tuple[int, str, int, int]) -> tuple[int, np.ndarray | None, str]:
    """``(row, path, channels, size)`` -> ``(row, image or None, why not)``: what a decoding process runs."""
    row, path, channels, size = job
    try:
        return row, load(path, channels, size), ""
    except Exception as exc:  # any file Pillow cannot read is reported by name, not raised
        return row, None, f"{type(exc).__name__}: {exc}".strip()


def fit_array(images: np.ndarray, size: int) -> np.ndarray:
    """``uint8 [N, C, H, W]`` fitted to ``[N, C, size, size]`` image by image (unchanged when already that size)."""
    if images.shape[-2:] == (size, size):
        return images
    out = np.empty((*images.shape[:2], size, size), dtype=np.uint8)
    for i, image in enumerate(images):
        picture = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
        out[i] = to_array(fit(picture, size))
    return out
