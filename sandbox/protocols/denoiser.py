"""The denoiser contract: the trainable network ``F``, an exact denoiser, and the denoise function samplers call."""

from __future__ import annotations

from typing import Protocol, Union, runtime_checkable

import torch

from sandbox.protocols.data import DataSplits, ExactX0


@runtime_checkable
class DenoiserNetwork(Protocol):
    """The trainable network ``F`` a recipe's ``denoiser:`` section chooses: a ``torch.nn.Module``.

    ``build(params, shape)`` gets the data's item shape. ``forward(x, c_noise)``
    receives ``x = c_in x_t`` of shape ``(B, *shape)`` and ``c_noise`` of shape
    ``(B,)``, both float32 (or the autocast dtype), and returns a tensor of
    ``x``'s shape and dtype. ``c_noise`` is the prediction target's noise
    input (:data:`sandbox.targets.TARGETS`): ``1000 t`` for epsilon, x0 and v
    (so in [0, 1000]), ``ln(sigma / alpha) / 4`` for EDM (about -1.6 to 1.1);
    embed it with sinusoidal features, not as a table index.

    **Class-conditional.** A network that can take a class is built with
    ``build(params, shape, num_classes=K)`` when the recipe asks for one
    (``train.conditional``) and then called as ``forward(x, c_noise, class_labels)``
    with ``class_labels`` ``int64 (B,)`` in ``[0, K]``, where ``K`` is the null class
    (:func:`null_label`: no condition, for classifier-free guidance). The built-ins
    embed the class in a table of ``K + 1`` rows and add it to the noise-level
    embedding, as ADM (Dhariwal & Nichol 2021) and EDM do. A ``build`` without a
    ``num_classes`` argument cannot take a condition: a conditional recipe naming it
    is refused before any work, and its unconditional use is unchanged.
    """

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class AnalyticDenoiser(Protocol):
    """A denoiser with nothing to train: the data's exact ``E[x_0 | x_t]``.

    The engine trains nothing for it and samples with the exact answer; the
    network path (loss, optimizer, preconditioning) never sees it.
    ``bind(data)`` returns the exact denoiser of that data, or raises
    :class:`sandbox.errors.RecipeError` when the data has no closed form.
    """

    def bind(self, data: DataSplits) -> ExactX0: ...


class Denoise(Protocol):
    """What a sampler calls: ``denoise(x_t, t)`` returns the estimate of ``x_0`` (``x_t``'s shape and dtype).

    ``t`` is a Python float (one time for the batch) or a tensor of one time
    per item, in [0, 1]. Samplers receive a counting wrapper: every call is
    one network evaluation (NFE).
    """

    def __call__(self, x_t: torch.Tensor, t: Union[float, torch.Tensor], /) -> torch.Tensor: ...
