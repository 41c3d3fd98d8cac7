"""Typed parameters of the built-in grids (torch-free). A grid's fields take the values of the sampler's
fields of the same name (``sampler.rho``), so a sampler that offers the grid declares them too."""

from dataclasses import dataclass

from sandbox.params import positive


@dataclass
class KarrasGridParams:
    """Noise levels by eq. 5 of Karras et al. (2022)."""

    # fmt: off
    rho: float = 7.0  # exponent: larger puts more steps at low noise; 1 is uniform in sigma~
    # fmt: on

    def __post_init__(self) -> None:
        positive(self, "rho")
