"""A plugin-based research sandbox for diffusion models.

Importing this package is cheap: it does not import torch. Plugins use
:data:`hookimpl` to implement the hooks in :mod:`sandbox.hookspecs`; the
types they implement or receive are in :mod:`sandbox.protocols` and are
re-exported here on first use (``from sandbox import Schedule``).
"""

from __future__ import annotations

from typing import Any

import pluggy

from sandbox.errors import ParameterError

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("sandbox")

_PROTOCOLS = (
    "AnalyticDenoiser",
    "Callback",
    "DataSplits",
    "Denoise",
    "DenoiserNetwork",
    "DiffusersExport",
    "ExactX0",
    "Grid",
    "JobState",
    "Launcher",
    "Register",
    "RegisterExporter",
    "RunInfo",
    "RunJob",
    "Sampler",
    "Schedule",
    "StepInfo",
    "StoredItems",
)

__all__ = ["ParameterError", "__version__", "hookimpl", *_PROTOCOLS]


def __getattr__(name: str) -> Any:
    if name in _PROTOCOLS:  # imports torch, so only when asked for
        from sandbox import protocols

        return getattr(protocols, name)
    raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
