"""Errors the command line reports as one clear message and a non-zero exit."""


class SandboxError(Exception):
    """A user-facing error: the CLI prints the message, not a traceback."""

    exit_code = 1


class RecipeError(SandboxError):
    """A recipe key holds a value the sandbox cannot use."""

    exit_code = 2


class RegistryError(SandboxError):
    """A plugin registered something invalid, or a name is unknown or taken."""

    exit_code = 2
