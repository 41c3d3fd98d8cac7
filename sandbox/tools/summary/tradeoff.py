"""A guidance sweep's trade-off of sample quality against diversity, which :mod:`~sandbox.tools.summary.render`
writes as a table in ``summary.md`` and as ``tradeoff.png``.

Guidance buys quality (samples the classifier takes for the requested class)
with diversity (Ho & Salimans 2022, fig. 4; Dhariwal & Nichol 2021, fig. 5).
When a summary's groups differ in a ``guidance`` key (an axis ``guidance``,
or ``guidance.<param>`` such as ``guidance.scale``), each group is one point:
quality is ``class_accuracy`` where the cells report it, else the summary's
ranking metric; diversity is ``class_spread`` (within-class spread of the
samples relative to the real data's), else ``class_coverage``. Without a
diversity figure, or without a guidance axis, there is no trade-off to show.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from sandbox.tools.summary.stats import GENERATED, Group, Metric, lower_is_better, mean_std

QUALITY = ("class_accuracy",)  # first present; else the ranking metric
DIVERSITY = ("class_spread", "class_coverage")  # first present
Stat = tuple[Optional[float], Optional[float], int]  # mean, standard error, n


@dataclass
class Point:
    """One guidance setting (one group): its labels and the two figures over its finished seeds."""

    setting: str  # the guidance axes' values, " / "-joined
    others: str  # the other axes' "key=value, ..." ("" when guidance is the only axis): a line of the plot each
    labels: dict[str, str]
    quality: Stat
    diversity: Stat


@dataclass
class Tradeoff:
    """The figures and points of the trade-off."""

    axes: list[str]  # the guidance axes
    quality: Metric
    diversity: Metric
    points: list[Point]  # by the other axes (plan order), then by the guidance value


def guidance_axes(axes: list[str]) -> list[str]:
    return [key for key in axes if key == "guidance" or key.startswith("guidance.")]


def _available(groups: list[Group]) -> set[str]:
    return {key for group in groups for cell in group.cells if cell.status == "done" for key in cell.values}


def mean_se(values: list[Optional[float]]) -> Stat:
    """Mean, standard error of the mean (sample std / sqrt(n); None below two values) and n."""
    mean, std, n = mean_std(values)
    return mean, (std / math.sqrt(n) if std is not None else None), n


def _order(label: str) -> tuple[int, float]:
    try:
        return 0, float(label)
    except ValueError:
        return 1, 0.0  # not a number: plan order (the sort is stable)


def tradeoff(axes: list[str], metrics: list[Metric], groups: list[Group]) -> Optional[Tradeoff]:
    """The trade-off of a summary's groups, or None where it has no guidance axis or no diversity figure."""
    steered = guidance_axes(axes)
    available = _available(groups)
    diversity = next((GENERATED + n for n in DIVERSITY if GENERATED + n in available), None)
    quality = next((GENERATED + n for n in QUALITY if GENERATED + n in available), None)
    if not steered or diversity is None or (quality is None and not metrics):
        return None
    chosen = Metric(quality, False) if quality is not None else metrics[0]
    others = [key for key in axes if key not in steered]
    points = []
    for group in groups:
        done = [c for c in group.cells if c.status == "done"]
        points.append(
            Point(
                setting=" / ".join(group.labels[k] for k in steered),
                others=", ".join(f"{k}={group.labels[k]}" for k in others),
                labels=group.labels,
                quality=mean_se([c.values.get(chosen.key) for c in done]),
                diversity=mean_se([c.values.get(diversity) for c in done]),
            )
        )
    lines = list(dict.fromkeys(p.others for p in points))
    points.sort(key=lambda p: (lines.index(p.others), *_order(p.setting)))
    return Tradeoff(steered, chosen, Metric(diversity, lower_is_better(diversity)), points)
