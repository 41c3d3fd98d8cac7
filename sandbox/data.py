"""What a dataset plugin returns: train and validation splits plus optional rendering and scoring."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional


@dataclass
class DataSplits:
    """The result of a dataset's ``build(params)``.

    ``train`` and ``val`` are ``torch.utils.data.Dataset`` objects whose items
    are float tensors of ``shape`` (or tuples whose first element is one),
    scaled so the data has roughly unit scale: images in [-1, 1].

    ``render(samples) -> Tensor[3, H, W]`` in [0, 1] turns a batch into one
    picture for the sample grid; images get a grid by default.

    ``evaluate(samples) -> dict[str, float]`` scores a batch of samples; the
    engine calls it on generated samples and on as many held-out real items,
    so every quality figure is reported next to the real data's.
    """

    train: Any
    val: Any
    shape: tuple[int, ...]
    render: Optional[Callable[[Any], Any]] = None
    evaluate: Optional[Callable[[Any], dict[str, float]]] = None
    description: str = ""
    exact_x0: Optional[Callable[..., Any]] = None
    """``exact_x0(x_t, alpha, sigma) -> E[x_0 | x_t]`` in closed form, for data whose
    exact denoiser is known (used by analytic denoisers such as an oracle)."""
