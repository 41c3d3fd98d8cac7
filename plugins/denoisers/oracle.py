"""The oracle: the exact minimum-MSE denoiser of data whose E[x0 | x_t] is known in closed form.

It has no parameters and nothing to train. :class:`sandbox.targets.Denoiser`
sees ``is_analytic`` and asks :meth:`Oracle.exact_x0` instead of calling the
network, then passes the answer through the prediction target's output form
and back, so a sampler run with the oracle measures the sampler's and the
schedule's own discretisation error (and the target conversion), free of any
network error.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from sandbox.errors import RecipeError, SandboxError


class Oracle(torch.nn.Module):
    """``D(x_t) = E[x_0 | x_t]`` read from the dataset's closed form (``DataSplits.exact_x0``)."""

    is_analytic = True

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(shape)
        self._exact_x0: Callable[..., torch.Tensor] | None = None

    def bind_data(self, data: Any) -> None:
        """Take the dataset's exact denoiser; the engine calls this right after building."""
        exact = getattr(data, "exact_x0", None)
        if exact is None:
            described = getattr(data, "description", "") or type(data).__name__
            raise RecipeError(
                "recipe key 'denoiser.name': 'oracle' needs a dataset with a closed-form denoiser "
                f"(exact_x0); dataset '{described}' has none (gaussian_mixture has one)"
            )
        self._exact_x0 = exact

    def exact_x0(self, x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``E[x_0 | x_t]`` for ``x_t = alpha x_0 + sigma eps`` (alpha, sigma broadcast against ``x_t``)."""
        if self._exact_x0 is None:
            raise SandboxError("the oracle denoiser is not bound to a dataset: call bind_data(data) first")
        return self._exact_x0(x_t, alpha, sigma)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        raise SandboxError(
            "the oracle denoiser is analytic: it has no network output F(c_in x, c_noise) and knows no "
            "schedule; wrap it in sandbox.targets.Denoiser, which calls exact_x0(x_t, alpha, sigma)"
        )

    def extra_repr(self) -> str:
        return f"shape={self.shape}, bound={self._exact_x0 is not None}"


def build(params: None, shape: tuple[int, ...]) -> Oracle:
    """A parameter-free oracle for items of ``shape``."""
    return Oracle(shape)
