"""The dataset contract: what a dataset's ``build`` returns, the labels of its items, splits stored as one tensor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional, Protocol, runtime_checkable

import torch

#: ``exact_x0(x_t, alpha, sigma) -> E[x_0 | x_t]`` for ``x_t = alpha x_0 + sigma eps``;
#: ``alpha`` and ``sigma`` broadcast against ``x_t`` (one value per item). A dataset that declares classes
#: also answers ``exact_x0(x_t, alpha, sigma, labels)``: ``E[x_0 | x_t, c]`` per item, where a label equal to
#: the number of classes (the null class, :func:`null_label`) asks for the unconditional ``E[x_0 | x_t]``.
ExactX0 = Callable[..., torch.Tensor]


@dataclass
class DataSplits:
    """What a dataset's ``build(params)`` returns.

    ``train`` and ``val`` are ``torch.utils.data.Dataset`` objects whose items
    are float tensors of ``shape`` (or tuples whose first element is one),
    scaled so the data has roughly unit scale: images in [-1, 1].

    A dataset with labels names its ``classes``; its items are then
    ``(x, label)`` pairs, ``label`` an integer in ``[0, len(classes))``
    (torchvision's convention), which a class-conditional run
    (``train.conditional``) trains on. Runs that are not conditional read
    ``x`` alone, so declaring classes changes nothing for them.
    """

    # fmt: off
    train: Any                                   #: training split (a torch Dataset)
    val: Any                                     #: held-out split: validation loss and real-data scores
    shape: tuple[int, ...]                       #: shape of one item, e.g. (3, 32, 32) or (2,)
    render: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    # fmt: on
    """``render(samples) -> Tensor[3, H, W]`` in [0, 1]: one picture of a batch; images get a grid by default."""
    evaluate: Optional[Callable[[torch.Tensor], dict[str, float]]] = None
    """``evaluate(samples) -> {metric: value}``; the engine scores generated samples and as many held-out
    real items, so every quality figure is reported next to the real data's."""
    description: str = ""  #: one line shown in the run's header
    exact_x0: Optional[ExactX0] = None
    """The data's exact denoiser in closed form, where one is known (read by analytic denoisers)."""
    cache_dir: Optional[str] = None
    """A folder beside the data where the engine may cache statistics derived from the training split (the
    reference statistics of ``eval.metrics``, :mod:`sandbox.engine.fid`); None: beside the run folder instead."""
    classes: Optional[list[str]] = None
    """The names of the classes, when items carry a label (their index in this list); None: unlabelled."""
    evaluate_classes: Optional[Callable[[torch.Tensor, torch.Tensor], dict[str, float]]] = None
    """``evaluate_classes(samples, labels) -> {metric: value}``: how well samples drawn for the classes
    ``labels`` (``int64 [N]``) show them, such as the share a classifier assigns to the requested class; the
    engine reports it for held-out real items with their own labels too."""
    to_data: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    """``to_data(x) -> x`` in the data's own units: the inverse of the dataset's normalisation, for a dataset that
    rescales its items (per-feature standardisation, say). The engine applies it to samples before it saves them
    (``samples/final.pt``, ``sandbox sample``'s ``samples.pt``); everything else (``render``, ``evaluate``,
    ``evaluate_classes``, FID) is given samples as the model draws them, like the items of ``train`` and ``val``,
    so an ``evaluate`` that scores in data units applies ``to_data`` itself. None: the items are in data units."""
    levels: Optional[int] = None
    """Discrete data: each coordinate of an item takes one of ``levels`` evenly spaced values from -1 to 1 (256 for
    8-bit images scaled to [-1, 1]), so its likelihood is a probability, reported in bits per dimension
    (:mod:`sandbox.engine.likelihood`). None: continuous data, whose likelihood is a density (nats per dimension)."""
    log_density: Optional[Callable[[torch.Tensor, float], torch.Tensor]] = None
    """``log_density(x, noise) -> [N]``: the exact ``log p(x)`` of the data smoothed by ``N(0, noise^2 I)``, in
    nats per item, where it is known in closed form (an exact mixture); the likelihood reports it beside its
    estimates."""


def null_label(classes: int) -> int:
    """The null class of a model trained on ``classes`` classes: the label meaning "no condition"
    (classifier-free guidance's dropped label, Ho & Salimans 2022), one past the last class."""
    return classes


def item_label(item: Any) -> torch.Tensor:
    """The label of a labelled split's item (or the labels of a batch of them), as ``int64``."""
    return torch.as_tensor(item[1], dtype=torch.int64)


def first_tensor(item: Any) -> torch.Tensor:
    """The data of a split's item (or of a batch of them): the item itself, or its first element."""
    data: torch.Tensor = item[0] if isinstance(item, (tuple, list)) else item
    return data


@runtime_checkable
class StoredItems(Protocol):
    """A split stored as one tensor, which the engine may keep on the training device and batch there.

    Optional for a ``DataSplits.train`` split: when it has these two methods
    (and ``run.data_on_device`` allows it), training skips the DataLoader,
    moves :meth:`stored` to the device once and turns each batch of rows into
    training items with :meth:`decode` on the device, so the device never waits
    for the host. ``decode(stored()[[i]], g)`` must give items of the same
    distribution as ``split[i]`` (a ``uint8`` image scaled to [-1, 1], with the
    same random augmentation), drawing any randomness from the CPU generator
    ``g``, which the engine seeds per batch so a resumed run draws the same.
    """

    def stored(self) -> torch.Tensor:
        """The split's items as stored, ``[N, ...]`` in any dtype (``uint8`` images take a quarter of float32)."""
        ...

    def decode(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Rows of :meth:`stored` (on any device) -> float training items on the same device."""
        ...


@runtime_checkable
class StoredLabels(Protocol):
    """A labelled :class:`StoredItems` split: its labels as one tensor, row for row with :meth:`StoredItems.stored`,
    so a class-conditional run can batch it on the device too."""

    def stored_labels(self) -> torch.Tensor:
        """``int64 [N]``: the label of each stored row."""
        ...
