"""Metrics, groups and their statistics: mean and standard deviation over seeds, rank, difference to a baseline."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from sandbox.engine.rundir import RunDir
from sandbox.engine.sweepdir import parse_value, split_list
from sandbox.errors import RecipeError
from sandbox.tools.summary.cells import CellResult

DEFAULT_METRICS = ("train.final_val_loss_ema", "train.images_per_s")
GENERATED = "sample_quality.generated."
LOWER_IS_BETTER = ("loss", "distance", "error", "swd", "w2", "fid", "kid", "nll")
LIKELIHOOD = "likelihood."  # summary.json's likelihood records (eval.metrics: [nll]): likelihood.<estimator>.nll
FIRST = ("fid", "kid")  # sample-quality figures that rank before the dataset's own, where present


@dataclass(frozen=True)
class Metric:
    key: str  # dotted key in summary.json
    lower_is_better: bool

    @property
    def label(self) -> str:
        if self.key.startswith(LIKELIHOOD) and self.key.endswith(".nll"):
            return f"nll ({self.key[len(LIKELIHOOD) : -len('.nll')]})"
        for prefix in ("train.", "sample_quality."):
            if self.key.startswith(prefix):
                return self.key[len(prefix) :]
        return self.key


def lower_is_better(key: str) -> bool:
    """True for losses and distances (a word of :data:`LOWER_IS_BETTER` in the name)."""
    words = re.split(r"[._\-]", key.lower())
    return any(word in LOWER_IS_BETTER for word in words) or "loss" in key.lower()


def parse_metric(text: str) -> Metric:
    """``key``, ``key:min`` (lower is better) or ``key:max``."""
    key, _, direction = text.partition(":")
    if direction not in ("", "min", "max") or not key:
        raise RecipeError(
            f"metric '{text}': expected key, key:min or key:max, for example "
            "sample_quality.generated.confident_share:max"
        )
    return Metric(key, lower_is_better(key) if not direction else direction == "min")


@dataclass
class Group:
    # fmt: off
    labels: dict[str, str]         # axis key -> value label
    cells: list[CellResult]
    facts: dict[str, str]          # axis key (and keys inside section values) -> value, for --baseline
    stats: dict[str, tuple[Optional[float], Optional[float], int]] = field(default_factory=dict)  # mean, std, n
    diff: dict[str, Optional[float]] = field(default_factory=dict)
    rank: Optional[int] = None
    baseline: bool = False
    # fmt: on

    @property
    def name(self) -> str:
        return " / ".join(self.labels.values()) or "recipe"

    def count(self, status: str) -> int:
        return sum(c.status == status for c in self.cells)


def value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _facts(axes: list[dict[str, Any]], labels: tuple[str, ...]) -> dict[str, str]:
    facts = {}
    for axis, label in zip(axes, labels):
        facts[axis["key"]] = label
        value = axis["values"][axis["labels"].index(label)]
        if isinstance(value, dict):
            for key, inner in _numbers_or_values(value).items():
                facts[f"{axis['key']}.{key}"] = value_text(inner)
        else:
            facts.setdefault(f"{axis['key']}#value", value_text(value))
    return facts


def _numbers_or_values(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_numbers_or_values(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def resolve_metrics(requested: list[str] | None, cells: list[CellResult]) -> list[Metric]:
    available: list[str] = []
    for cell in cells:
        available += [k for k in cell.values if k not in available]
    if not requested:
        generated = [k for k in available if k.startswith(GENERATED)]
        first = [GENERATED + name for name in FIRST if GENERATED + name in generated]
        generated = first + [k for k in generated if k not in first]
        likelihood = [k for k in available if k.startswith(LIKELIHOOD) and k.endswith(".nll")]
        keys = generated + likelihood + [k for k in DEFAULT_METRICS if k in available or not available]
        return [Metric(k, lower_is_better(k)) for k in keys]
    metrics = []
    for text in requested:
        metric = parse_metric(text)
        if available and metric.key not in available:
            matches = [k for k in available if k.endswith("." + metric.key)]
            matches = [k for k in matches if k.startswith(GENERATED)] or matches
            if len(matches) != 1:
                raise RecipeError(
                    f"metric '{metric.key}': "
                    + (
                        f"matches {', '.join(matches)}; give the full key"
                        if matches
                        else f"not in the cells' {RunDir.SUMMARY}; numeric keys: {', '.join(available)}"
                    )
                )
            metric = Metric(matches[0], metric.lower_is_better)
        metrics.append(metric)
    return metrics


def mean_std(values: list[Optional[float]]) -> tuple[Optional[float], Optional[float], int]:
    """Mean, sample standard deviation (n - 1; None below two values) and n."""
    kept = [v for v in values if v is not None and math.isfinite(v)]
    n = len(kept)
    if n == 0:
        return None, None, 0
    mean = sum(kept) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in kept) / (n - 1)) if n > 1 else None
    return mean, std, n


def parse_baseline(text: str) -> dict[str, str]:
    """``key=value,key=value`` -> {key: normalised value}."""
    pairs = {}
    try:
        items = split_list(text)
    except ValueError as exc:
        raise RecipeError(f"--baseline '{text}': {exc}") from exc
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(
                f"--baseline '{text}': expected key=value,..., for example "
                "--baseline denoiser.name=unet,schedule.name=linear"
            )
        try:
            pairs[key.strip()] = value_text(parse_value(value.strip()))
        except ValueError as exc:
            raise RecipeError(f"--baseline '{text}': {exc}") from exc
    return pairs


def _matches(group: Group, pairs: dict[str, str]) -> bool:
    for key, value in pairs.items():
        if group.facts.get(key) != value and group.facts.get(f"{key}#value") != value:
            return False
    return True


def aggregate(
    plan: dict[str, Any], cells: list[CellResult], metrics: list[Metric], baseline: str | None = None
) -> list[Group]:
    """Groups in plan order with their statistics, rank by the first metric and difference to the baseline."""
    axes = plan["axes"]
    groups: dict[tuple[str, ...], Group] = {}
    for cell in cells:
        if cell.group not in groups:
            groups[cell.group] = Group(
                labels=dict(zip((a["key"] for a in axes), cell.group)), cells=[], facts=_facts(axes, cell.group)
            )
        groups[cell.group].cells.append(cell)
    ordered = list(groups.values())
    for group in ordered:
        done = [c for c in group.cells if c.status == "done"]
        group.stats = {m.key: mean_std([c.values.get(m.key) for c in done]) for m in metrics}
    if not ordered:
        return ordered
    if baseline:
        pairs = parse_baseline(baseline)
        chosen = [g for g in ordered if _matches(g, pairs)]
        if len(chosen) != 1:
            names = ", ".join(" ".join(f"{k}={v}" for k, v in g.labels.items()) for g in (chosen or ordered))
            raise RecipeError(
                f"--baseline '{baseline}' matches {len(chosen)} groups; "
                f"{'these' if chosen else 'the groups are'}: {names}"
            )
        base = chosen[0]
    else:
        base = ordered[0]
    base.baseline = True
    for group in ordered:
        for m in metrics:
            mine, theirs = group.stats[m.key][0], base.stats[m.key][0]
            group.diff[m.key] = mine - theirs if mine is not None and theirs is not None else None
    if metrics:
        first = metrics[0]
        sign = 1.0 if first.lower_is_better else -1.0
        means = {id(g): g.stats[first.key][0] for g in ordered}
        scored = [g for g in ordered if means[id(g)] is not None]
        scored.sort(key=lambda g: sign * (means[id(g)] or 0.0))
        for rank, group in enumerate(scored, 1):
            group.rank = rank
    return ordered
