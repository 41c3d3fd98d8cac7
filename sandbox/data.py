"""Import path kept for dataset plugins: the data-splits type is stated in :mod:`sandbox.protocols`."""

from sandbox.protocols import DataSplits

__all__ = ["DataSplits"]
