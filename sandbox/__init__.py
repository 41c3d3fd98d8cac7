"""A plugin-based research sandbox for diffusion models.

Importing this package is cheap: it does not import torch. Plugins use
:data:`hookimpl` to implement the hooks in :mod:`sandbox.hookspecs`.
"""

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("sandbox")

__all__ = ["hookimpl", "__version__"]
