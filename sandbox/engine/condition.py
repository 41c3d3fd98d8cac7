"""Class conditioning in a run: which classes to draw, label dropout, and guidance around the denoise function.

A class-conditional run (``train.conditional``) trains the network on each
item's label, replacing a share ``train.label_dropout`` of them by the null
class (:func:`sandbox.protocols.null_label`), so one network learns both the
conditional and the unconditional denoiser (Ho & Salimans 2022,
"Classifier-Free Diffusion Guidance", Algorithm 1). Sampling draws the classes
``eval.classes`` asks for, and a recipe's ``guidance:`` section combines the
model's estimates through a :class:`sandbox.protocols.Guidance`;
:func:`steer` turns that into the one :class:`sandbox.protocols.Denoise` a
sampler calls, so every sampler, grid and schedule works with every guidance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, Union

import torch

from sandbox.engine.precond import LabelledDenoise, times
from sandbox.errors import ParameterError, RecipeError, SandboxError
from sandbox.protocols import DataSplits, Denoise, Guidance, Schedule, null_label


def resolve_classes(
    requested: Optional[Sequence[Any]], classes: Sequence[str], key: str = "eval.classes"
) -> list[int]:
    """The class indices ``requested`` names (indices or names; None: every class), checked against ``classes``."""
    if requested is None:
        return list(range(len(classes)))
    out = []
    for value in requested:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise RecipeError(f"recipe key '{key}': {value!r}; expected a class index or name")
        if isinstance(value, str) and value in classes:
            out.append(list(classes).index(value))
        elif isinstance(value, int) or value.lstrip("-").isdigit():
            index = int(value)
            if not 0 <= index < len(classes):
                raise RecipeError(
                    f"recipe key '{key}': class {index} is out of range; expected 0 to {len(classes) - 1} "
                    f"({len(classes)} classes)"
                )
            out.append(index)
        else:
            shown = ", ".join(classes[:12]) + (", ..." if len(classes) > 12 else "")
            raise RecipeError(f"recipe key '{key}': unknown class {value!r}; expected an index or one of: {shown}")
    return out


def draw_labels(n: int, chosen: Sequence[int]) -> torch.Tensor:
    """``n`` labels over the ``chosen`` classes, balanced and in blocks: sample ``i`` gets
    ``chosen[i * len(chosen) // n]``, so every class has ``n // len(chosen)`` or one more, in order (one row
    per class in a picture)."""
    index = torch.arange(n, dtype=torch.int64) * len(chosen) // max(n, 1)
    return torch.as_tensor(list(chosen), dtype=torch.int64)[index]


def drop_labels(
    labels: torch.Tensor, share: float, null: int, within: Optional[tuple[int, int]] = None
) -> torch.Tensor:
    """``labels`` with each replaced by ``null`` with probability ``share`` (one draw per item of the global
    batch from torch's generator, the rows ``within`` kept, as the loss draws its noise)."""
    if share <= 0:
        return labels
    start, total = within if within is not None else (0, len(labels))
    drop = (torch.rand(total) < share)[start : start + len(labels)].to(labels.device)
    return torch.where(drop, torch.full_like(labels, null), labels)


def check_conditional(recipe: Any, data: DataSplits, guidance: Optional[Guidance], provider: str) -> int:
    """The number of classes of a conditional run (0 for an unconditional one); refuses, before any work, a
    conditional recipe on unlabelled data and a guidance that needs a conditional model in an unconditional run."""
    dataset = recipe.components["dataset"][0]
    if recipe.train.conditional:
        if not data.classes:
            raise RecipeError(
                ParameterError(
                    "conditional",
                    True,
                    f"a dataset with classes (DataSplits.classes); dataset '{dataset}' ({provider}) has no labels",
                ).in_section("train")
            )
        resolve_classes(recipe.eval.classes, data.classes)
        return len(data.classes)
    if guidance is not None and guidance.conditional:
        name = recipe.guidance[0]
        raise RecipeError(
            f"recipe key 'guidance.name': {name!r} steers a class-conditional model; this run is not "
            "conditional (train.conditional: false): use autoguidance, or train with train.conditional=true"
        )
    if recipe.eval.classes is not None:
        raise RecipeError(
            f"recipe key 'eval.classes': {list(recipe.eval.classes)!r}; a run that is not class-conditional "
            "draws no classes (set train.conditional=true to train one)"
        )
    return 0


class Conditions:
    """The :class:`sandbox.protocols.Conditioned` of one batch: the model's estimates for the batch's labels.

    Counts what the guidance spends: ``evaluations`` (network evaluations per item: ``both`` counts two) and
    ``forwards`` (network calls: ``both`` is one call on the doubled batch).
    """

    def __init__(
        self,
        model: LabelledDenoise,
        labels: Optional[torch.Tensor],
        null: Optional[int],
        schedule: Schedule,
        *,
        guide: Optional[LabelledDenoise] = None,
        guide_labels: bool = True,
    ):
        self.model, self.labels, self.null, self.schedule = model, labels, null, schedule
        self.guide_model, self.guide_labels = guide, guide_labels
        self.evaluations = 0
        self.forwards = 0
        self.state: dict[str, Any] = {}  # a guidance's memory across the steps of this batch (APG's momentum)

    def _count(self, evaluations: int, forwards: int) -> None:
        self.evaluations += evaluations
        self.forwards += forwards

    def conditional(self, x_t: torch.Tensor, t: Union[float, torch.Tensor]) -> torch.Tensor:
        self._count(1, 1)
        return self.model(x_t, t, self.labels)

    def _null_labels(self, x_t: torch.Tensor) -> torch.Tensor:
        if self.null is None:
            raise SandboxError(
                "the guidance asked for the unconditional estimate, but the model is not class-conditional "
                "(train.conditional: false)"
            )
        return torch.full((x_t.shape[0],), self.null, dtype=torch.int64, device=x_t.device)

    def unconditional(self, x_t: torch.Tensor, t: Union[float, torch.Tensor]) -> torch.Tensor:
        labels = self._null_labels(x_t)
        self._count(1, 1)
        return self.model(x_t, t, labels)

    def both(self, x_t: torch.Tensor, t: Union[float, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        null = self._null_labels(x_t)
        assert self.labels is not None
        self._count(2, 1)
        t2 = torch.cat([times(t, x_t)] * 2) if isinstance(t, torch.Tensor) and t.ndim > 0 else t
        out = self.model(torch.cat([x_t, x_t]), t2, torch.cat([self.labels.to(x_t.device), null]))
        return out[: len(x_t)], out[len(x_t) :]

    def guide(self, x_t: torch.Tensor, t: Union[float, torch.Tensor]) -> torch.Tensor:
        if self.guide_model is None:
            raise SandboxError(
                "the guidance asked for a guiding model, but none is loaded: name one with guidance.guide=RUN_DIR"
            )
        self._count(1, 1)
        return self.guide_model(x_t, t, self.labels if self.guide_labels else None)

    def noise_level(self, t: Union[float, torch.Tensor]) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        alpha, sigma = self.schedule.alpha_sigma(t)
        return (sigma / alpha).to(torch.float64)


def steer(guidance: Optional[Guidance], conditions: Conditions) -> Denoise:
    """The denoise function a sampler calls: ``guidance(conditions, x_t, t)``, or the model's conditional
    estimate when there is no guidance."""
    if guidance is None:
        return conditions.conditional

    def guided(x_t: torch.Tensor, t: Union[float, torch.Tensor]) -> torch.Tensor:
        return guidance(conditions, x_t, t)

    return guided


def model_classes(recipe: Any, data: DataSplits) -> tuple[Optional[int], Optional[list[int]]]:
    """``(null label, chosen classes)`` of a conditional run, ``(None, None)`` of an unconditional one."""
    if not recipe.train.conditional or not data.classes:
        return None, None
    return null_label(len(data.classes)), resolve_classes(recipe.eval.classes, data.classes)


def class_spread(samples: torch.Tensor, labels: torch.Tensor) -> float:
    """Diversity within classes: the root mean squared distance of a class's items to their class mean, per
    dimension, averaged over the classes present (with one item or fewer a class says nothing and is skipped).

    Guidance trades it for fidelity: it shrinks as the scale grows (Ho & Salimans 2022, Figure 1); compare it
    with the same figure on held-out real items of the same classes.
    """
    x = samples.detach().reshape(len(samples), -1).double().cpu()
    spreads = []
    for c in torch.unique(labels).tolist():
        members = x[labels.cpu() == c]
        if len(members) > 1:
            spreads.append(float((members - members.mean(0)).pow(2).mean().sqrt()))
    return sum(spreads) / len(spreads) if spreads else float("nan")
