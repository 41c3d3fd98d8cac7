"""Checks of the data's item shape shared by the built-in denoisers (torch-free).

The parameters check their own ranges when a recipe is loaded
(:mod:`sandbox_plugins.denoisers.params`); what also needs the item shape is
checked when the network is built, before any tensor is allocated, and raises
:class:`sandbox.errors.ParameterError` naming the field (the engine adds the
recipe section).
"""

from __future__ import annotations

from collections.abc import Sequence

from sandbox.errors import ParameterError


def item_shape(name: str, shape: Sequence[int]) -> tuple[int, ...]:
    """The data item shape as a tuple of positive ints, or a ParameterError on denoiser ``name``."""
    shape = tuple(int(s) for s in shape)
    if not shape or any(s < 1 for s in shape):
        raise ParameterError(
            "name",
            name,
            f"data items of a non-empty shape without zero-sized axes, but the dataset's items have shape {shape}",
        )
    return shape


def image_shape(name: str, shape: Sequence[int]) -> tuple[int, int, int]:
    """``(C, H, W)``, or a ParameterError saying that denoiser ``name`` needs images."""
    shape = item_shape(name, shape)
    if len(shape) != 3:
        raise ParameterError(
            "name",
            name,
            f"image data of shape (C, H, W), but the dataset's items have shape "
            f"{shape}; use a denoiser for vectors such as 'mlp'",
        )
    return shape
