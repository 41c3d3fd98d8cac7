"""Registration: the callable each ``register_*`` hook receives, and what ``build`` may be given as."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional, Protocol, Union

#: what ``build`` may be given as: the callable itself, or a lazy ``"module:attr"`` path
Build = Union[Callable[..., Any], str]


class Register(Protocol):
    """The callable each ``register_*`` hook receives: ``register(name, build, *, params=None, description=None)``.

    ``name`` is lower-case letters, digits, ``_`` or ``-``, starting with a
    letter, and must be unique within its kind. ``build`` is a callable or a
    ``"module:attr"`` string imported only when the component is used (so
    ``sandbox list`` stays fast and torch-free). ``params`` is a dataclass
    type of the component's typed parameters, against which recipe values
    are validated; its docstring's first line is the default ``description``.
    """

    def __call__(
        self, name: str, build: Build, *, params: Optional[type] = None, description: Optional[str] = None
    ) -> None: ...
