"""``sandbox summary`` reads a run's likelihood records like any other figure: listed, labelled, lower is better."""

from __future__ import annotations

from sandbox.tools.summary.cells import CellResult
from sandbox.tools.summary.stats import parse_metric, resolve_metrics


def test_likelihood_figures_are_default_metrics_after_sample_quality_and_lower_is_better():
    values = {
        "sample_quality.generated.swd": 0.1,
        "likelihood.ode.nll": 1.2,
        "likelihood.ode.stderr": 0.01,
        "likelihood.vlb.nll": 1.4,
        "train.final_val_loss_ema": 0.3,
        "train.images_per_s": 10.0,
    }
    metrics = resolve_metrics(None, [CellResult("a", ("x",), 0, "done", values=values)])
    assert [m.key for m in metrics] == [
        "sample_quality.generated.swd",
        "likelihood.ode.nll",
        "likelihood.vlb.nll",
        "train.final_val_loss_ema",
        "train.images_per_s",
    ]
    assert [m.label for m in metrics[1:3]] == ["nll (ode)", "nll (vlb)"]
    assert all(m.lower_is_better for m in metrics[:4])
    assert parse_metric("likelihood.elbo.nll").lower_is_better


def test_a_later_sandbox_likelihood_joins_the_runs_summary_and_its_newest_record_wins(tmp_path):
    import json
    import os

    from sandbox.tools.summary.cells import read_cell

    (tmp_path / "summary.json").write_text(json.dumps({"likelihood": {"ode": {"nll": 3.0}}, "train": {"steps": 5}}))
    for i, (name, value) in enumerate([("ode-1", 2.5), ("ode-2", 2.25), ("elbo-1", None)]):
        folder = tmp_path / "likelihood" / name
        folder.mkdir(parents=True)
        records = {"elbo": {"nll": 4.0}} if value is None else {"ode": {"nll": value}}
        (folder / "likelihood.json").write_text(json.dumps({"likelihood": records}))
        os.utime(folder / "likelihood.json", (1000 + i, 1000 + i))
    values = read_cell(tmp_path, "a", ("x",), 0).values
    assert values["likelihood.ode.nll"] == 2.25 and values["likelihood.elbo.nll"] == 4.0
    assert values["train.steps"] == 5
