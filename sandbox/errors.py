"""Errors the command line reports as one clear message and a non-zero exit."""

from __future__ import annotations

from typing import Any


class SandboxError(Exception):
    """A user-facing error: the CLI prints the message, not a traceback."""

    exit_code = 1


class RecipeError(SandboxError):
    """A recipe key holds a value the sandbox cannot use."""

    exit_code = 2


class RegistryError(SandboxError):
    """A plugin registered something invalid, or a name is unknown."""

    exit_code = 2


class DuplicateComponentError(RegistryError):
    """Two plugins registered one name in one kind; that name is unusable until one is preferred or removed."""


class ParameterError(ValueError):
    """A parameter value out of its range, raised by a params dataclass's ``__post_init__``.

    ``key`` is the field's name (or a dotted path inside it); the engine adds
    the recipe section, so a plugin never spells ``'sampler.steps'``::

        raise ParameterError("steps", self.steps, "an integer >= 1")

    Several keys that are only wrong together are joined by commas:
    ``ParameterError("beta_start, beta_end", (1e-2, 1e-4), "beta_start <= beta_end")``.
    """

    def __init__(self, key: str, value: Any, expected: str):
        self.key, self.value, self.expected = key, value, expected
        super().__init__(f"{key}: {value!r}; expected {expected}")

    def in_section(self, section: str) -> str:
        """The message with each key prefixed by the recipe section: ``recipe key 'sampler.steps': 0; ...``."""
        keys = [f"{section}.{k.strip()}" for k in self.key.split(",")]
        label = "recipe key" if len(keys) == 1 else "recipe keys"
        return f"{label} {', '.join(repr(k) for k in keys)}: {self.value!r}; expected {self.expected}"


class ContractError(SandboxError):
    """A plugin's built component does not follow its kind's protocol (:mod:`sandbox.protocols`)."""


class Diverged(SandboxError):
    """The loss became non-finite or exploded; nothing was written after the last good checkpoint."""

    every_rank = True  # the losses are averaged over the processes, so every process stops alike


class Interrupted(SandboxError):
    """SIGINT or SIGTERM stopped training after a checkpoint; exit status 128 + the signal's number."""

    every_rank = True  # the stop request is agreed by every process

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum
        self.signum = signum
