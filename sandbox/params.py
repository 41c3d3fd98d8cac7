"""Range checks for params dataclasses, to call from ``__post_init__`` (torch-free).

Each raises :class:`sandbox.errors.ParameterError` naming the field, so the
engine can report ``recipe key 'sampler.steps': 0; expected an integer >= 1``.
NaN and infinity fail every numeric check (a NaN learning rate is a range
error, not a silent no-op)::

    @dataclass
    class MyParams:
        steps: int = 50
        eta: float = 0.0

        def __post_init__(self):
            at_least(self, "steps", 1)
            at_least(self, "eta", 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from sandbox.errors import ParameterError
from sandbox.grids import check_grid


def _number(obj: Any, key: str, integer: bool) -> Any:
    value = getattr(obj, key)
    if integer:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParameterError(key, value, "an integer")
    elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ParameterError(key, value, "a finite number")
    return value


def at_least(obj: Any, key: str, minimum: float, *, optional: bool = False) -> None:
    """``obj.<key> >= minimum``; an int field when ``minimum`` is an int. ``optional`` lets ``None`` through."""
    if optional and getattr(obj, key) is None:
        return
    integer = isinstance(minimum, int)
    value = _number(obj, key, integer)
    if not value >= minimum:
        raise ParameterError(key, value, f"{'an integer' if integer else 'a number'} >= {minimum:g}")


def finite(obj: Any, *keys: str) -> None:
    """Each ``obj.<key>`` is a finite number."""
    for key in keys:
        _number(obj, key, False)


def positive(obj: Any, *keys: str) -> None:
    """Each ``obj.<key>`` is a finite number > 0."""
    for key in keys:
        value = _number(obj, key, False)
        if not value > 0:
            raise ParameterError(key, value, "a number > 0")


def between(obj: Any, key: str, low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> None:
    """``obj.<key>`` lies in the interval from ``low`` to ``high`` (closed unless ``*_open``)."""
    value = _number(obj, key, False)
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (above and below):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ParameterError(key, value, f"a number in {interval}")


def one_of(obj: Any, key: str, choices: Iterable[str]) -> None:
    """``obj.<key>`` is one of ``choices``, with the closest suggested."""
    import difflib

    choices = tuple(choices)
    value = getattr(obj, key)
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f". Did you mean '{close[0]}'?" if close else ""
        raise ParameterError(key, value, f"one of {', '.join(choices)}{hint}")


def divides(obj: Any, key: str, channels: int, what: str) -> None:
    """``obj.<key>`` divides ``channels`` (described by ``what``, e.g. 'the 96 channels of level 1')."""
    value = getattr(obj, key)
    if channels % value:
        raise ParameterError(key, value, f"a divisor of {what}")


def time_grid(obj: Any, key: str = "grid") -> None:
    """``obj.<key>`` names a time grid, a ``.json`` grid file, or lists the times (:func:`sandbox.grids.check_grid`).

    A name is checked against the registry when the sampler is built; a list
    is stored as a list of floats.
    """
    setattr(obj, key, check_grid(getattr(obj, key), key))
