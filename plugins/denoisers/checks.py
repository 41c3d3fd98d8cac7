"""Parameter and shape checks shared by the built-in denoisers (torch-free).

Every failure is a :class:`sandbox.errors.RecipeError` that names the recipe
key to change, so a bad recipe fails before any tensor is allocated.
"""

from __future__ import annotations

from typing import NoReturn, Sequence

from sandbox.errors import RecipeError

SECTION = "denoiser"


def fail(key: str, message: str) -> NoReturn:
    """Raise ``RecipeError("recipe key 'denoiser.<key>': <message>")``."""
    raise RecipeError(f"recipe key '{SECTION}.{key}': {message}")


def item_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """The data item shape as a tuple of positive ints."""
    shape = tuple(int(s) for s in shape)
    if not shape or any(s < 1 for s in shape):
        raise RecipeError(f"the dataset's item shape {shape} is empty or has a zero-sized axis")
    return shape


def image_shape(name: str, shape: Sequence[int]) -> tuple[int, int, int]:
    """``(C, H, W)``, or a RecipeError saying that denoiser ``name`` needs images."""
    shape = item_shape(shape)
    if len(shape) != 3:
        fail(
            "name",
            f"'{name}' needs image data of shape (C, H, W), but the dataset's items have shape "
            f"{shape}; use a denoiser for vectors such as 'mlp'",
        )
    return shape  # type: ignore[return-value]


def positive(params: object, *keys: str, minimum: int = 1) -> None:
    """Each ``params.<key>`` is an int >= ``minimum``."""
    for key in keys:
        value = getattr(params, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            fail(key, f"expected an integer >= {minimum}, got {value!r}")


def probability(params: object, key: str) -> None:
    """``params.<key>`` lies in [0, 1)."""
    value = getattr(params, key)
    if not 0.0 <= float(value) < 1.0:
        fail(key, f"expected a probability in [0, 1), got {value!r}")


def divides(key: str, divisor: int, channels: int, what: str) -> None:
    """``divisor`` (the value of ``key``) divides ``channels`` (described by ``what``)."""
    if channels % divisor:
        fail(key, f"{divisor} does not divide the {channels} channels of {what}; expected a divisor of {channels}")
