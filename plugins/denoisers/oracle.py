"""The oracle: the exact minimum-MSE denoiser of data whose ``E[x_0 | x_t]`` is known in closed form.

An analytic denoiser (:class:`sandbox.protocols.AnalyticDenoiser`): it has
no parameters and nothing to train, so the engine skips training and samples
with the dataset's exact answer (``DataSplits.exact_x0``). A sampler run with
the oracle measures the sampler's and the schedule's own discretisation error
(and the prediction target's conversion, see
:func:`sandbox.engine.precond.exact_denoise`), free of any network error.
"""

from __future__ import annotations

from sandbox.errors import ParameterError
from sandbox.protocols import DataSplits, ExactX0


class Oracle:
    """``D(x_t) = E[x_0 | x_t]`` read from the dataset's closed form."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = tuple(shape)

    def bind(self, data: DataSplits) -> ExactX0:
        """The dataset's exact denoiser; a dataset without one is a recipe error."""
        if data.exact_x0 is None:
            described = data.description or "this dataset"
            raise ParameterError(
                "name",
                "oracle",
                f"a dataset with a closed-form denoiser (exact_x0), such as gaussian_mixture; {described} has none",
            )
        return data.exact_x0

    def __repr__(self) -> str:
        return f"Oracle(shape={self.shape})"


def build(params: None, shape: tuple[int, ...]) -> Oracle:
    """A parameter-free oracle for items of ``shape``."""
    return Oracle(shape)
