"""``sandbox summary`` (being split into one module per job)."""

from sandbox.tools.summary.render import *  # noqa: F403
from sandbox.tools.summary.render import _resolve_metrics  # noqa: F401
