"""``sandbox doctor``: the full registered matrix passes, and a broken sampler is caught."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import pytest
import torch
from rich.console import Console

from sandbox import cli, hookimpl
from sandbox.registry import get_registry, load_registry
from sandbox.targets import TARGETS
from sandbox.tools.doctor.cells import BAD, DIVERGED, FAILED, INACCURATE, NONFINITE, NOT_RUN, OK
from sandbox.tools.doctor.oracle import run_doctor
from sandbox.tools.doctor.report import render

REGISTRY = get_registry()


def text_of(renderable) -> str:
    console = Console(record=True, width=240)
    console.print(renderable)
    return console.export_text()


@pytest.mark.slow
def test_every_registered_sampler_schedule_and_target_passes():
    console = Console(record=True, width=240)
    report = run_doctor(samples=1000, console=console)
    rows = {(r.sampler, r.schedule, r.target) for r in report.rows}
    assert rows == {(a, b, c) for a in REGISTRY.names("sampler") for b in REGISTRY.names("schedule") for c in TARGETS}
    bad = [
        (r.sampler, r.schedule, r.target, c.budget, c.status, c.error)
        for r in report.rows
        for c in r.cells
        if c.status != OK
    ]
    assert not bad, bad
    assert report.exit_status == 0
    for row in report.rows:
        assert [c.nfe for c in row.cells] == sorted(c.nfe for c in row.cells)  # more budget, more evaluations
        assert all(abs(c.nfe - c.budget) <= max(2, c.budget // 10) for c in row.cells), row
    table = text_of(render(report))
    for name in REGISTRY.names("sampler") + REGISTRY.names("schedule"):
        assert name in table


@dataclass
class BrokenParams:
    """A sampler that misbehaves on purpose."""

    steps: int = 10
    how: str = "raise"


class Broken:
    def __init__(self, params):
        self.params = params

    def __call__(self, denoise, noise, schedule, *, generator=None, callback=None):
        for t in torch.linspace(1, 0, self.params.steps + 1)[:-1].tolist():
            denoise(noise, t)
        if self.params.how == "raise":
            raise RuntimeError("this sampler is broken")
        if self.params.how == "nan":
            return noise * float("nan")
        if self.params.how == "explode":
            return noise * 1e3
        return noise  # "noise": never denoises, so it stays far from the mixture


def build_broken(how):
    def build(params):
        params.how = how
        return Broken(params)

    return build


def build_fixed(params):
    """No parameters: the doctor runs it once, at its defaults."""
    return lambda denoise, noise, schedule, **kwargs: Broken(BrokenParams(steps=25, how="noise"))(
        denoise, noise, schedule
    )


class BrokenSamplers:
    @hookimpl
    def register_samplers(self, register):
        for how in ("raise", "nan", "explode", "noise"):
            register(f"broken-{how}", build_broken(how), params=BrokenParams)
        register("broken-fixed", build_fixed)


@pytest.fixture
def broken_registry():
    return load_registry({"broken-samplers": BrokenSamplers()})


@pytest.mark.slow
def test_a_broken_sampler_is_marked_and_fails_the_doctor(broken_registry):
    schedule = broken_registry.names("schedule")[0]
    names = [n for n in broken_registry.names("sampler") if n.startswith("broken-")]
    report = run_doctor(
        broken_registry,
        samples=200,
        budgets=(10, 25),
        samplers=names,
        schedules=[schedule],
        targets=["epsilon"],
        console=Console(file=io.StringIO()),
    )
    # fmt: off
    status = {r.sampler: [c.status for c in r.cells] for r in report.rows}
    assert status["broken-raise"] == [FAILED, FAILED]
    assert status["broken-nan"] == [NONFINITE, NONFINITE]
    assert status["broken-explode"] == [DIVERGED, DIVERGED]
    assert status["broken-noise"] == [OK, INACCURATE]          # only the largest budget must be accurate
    assert status["broken-fixed"] == [NOT_RUN, INACCURATE]     # no `steps`: its defaults, in the nearest column
    assert "this sampler is broken" in report.rows[names.index("broken-raise")].cells[0].error
    assert report.exit_status == 1
    counts = report.counts()
    assert counts[FAILED] == 2 and counts[NONFINITE] == 2 and counts[DIVERGED] == 2 and counts[INACCURATE] == 2
    table = text_of(render(report))
    assert "failed" in table and "nan" in table and "diverged" in table and "inaccurate" in table
    assert sum(counts[s] for s in BAD) == 8
    # fmt: on


def test_cli_writes_json_and_exits_zero(tmp_path, capsys):
    path = tmp_path / "doctor.json"
    sampler, schedule = REGISTRY.names("sampler")[0], REGISTRY.names("schedule")[0]
    code = cli.main(
        [
            "doctor",
            "--samples",
            "300",
            "--sampler",
            sampler,
            "--schedule",
            schedule,
            "--target",
            "v",
            "--json",
            str(path),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert sampler in out and "3 ok" in out
    data = json.loads(path.read_text())
    assert data["exit_status"] == 0 and data["samples"] == 300
    (row,) = data["rows"]
    assert (row["sampler"], row["schedule"], row["target"]) == (sampler, schedule, "v")
    assert [c["status"] for c in row["cells"]] == [OK, OK, OK] and all(c["swd"] > 0 for c in row["cells"])


def test_cli_unknown_sampler_is_a_clear_error(capsys):
    assert cli.main(["doctor", "--sampler", "ddin"]) == 2
    assert "unknown sampler 'ddin'" in capsys.readouterr().err


LOCAL_SAMPLER = """
from sandbox import hookimpl
from sandbox_plugins.samplers.ddim import build
from sandbox_plugins.samplers.params import DDIMParams


@hookimpl
def register_samplers(register):
    register("my-ddim", build, params=DDIMParams)
"""


def test_cli_checks_local_plugin_files_as_run_does(tmp_path, capsys):
    (tmp_path / "my_sampler.py").write_text(LOCAL_SAMPLER)
    (tmp_path / "broken.py").write_text("import no_such_dependency\n")
    code = cli.main(
        [
            "doctor",
            "--plugin",
            str(tmp_path / "my_sampler.py"),
            "--sampler",
            "my-ddim",
            "--schedule",
            "cosine",
            "--target",
            "x0",
            "--samples",
            "500",
        ]
    )
    out = " ".join(capsys.readouterr().out.split())
    assert code == 0 and "my-ddim" in out and "3 ok" in out
    assert cli.main(["doctor", "--plugin", str(tmp_path / "broken.py")]) == 1
    assert "broken.py: failed to load as a plugin: ModuleNotFoundError" in " ".join(capsys.readouterr().err.split())


@pytest.mark.slow
def test_every_grid_appears_with_grid_all():
    report = run_doctor(
        samples=200, budgets=(10, 25), samplers=["unipc", "heun"], schedules=["edm"], targets=["x0"], grids=["all"]
    )
    assert {(r.sampler, r.grid) for r in report.rows} == {
        (s, g) for s in ("unipc", "heun") for g in REGISTRY.names("grid")
    }
    assert all(c.status == OK for r in report.rows for c in r.cells), [
        (r.sampler, r.grid, c.budget, c.status, c.error) for r in report.rows for c in r.cells if c.status != OK
    ]
    table = text_of(render(report))
    assert "grid" in table and "uniform_log_snr" in table


def test_default_rows_name_each_samplers_own_grid():
    report = run_doctor(samples=200, budgets=(10,), samplers=["heun", "ddim"], schedules=["cosine"], targets=["v"])
    assert {(r.sampler, r.grid) for r in report.rows} == {("heun", "karras"), ("ddim", "schedule")}


def test_an_unknown_grid_is_refused(capsys):
    assert cli.main(["doctor", "--grid", "karas", "--sampler", "ddim", "--samples", "10"]) == 2
    assert "unknown grid 'karas'" in capsys.readouterr().err


def test_guided_rows_check_each_sampler_class_by_class_at_the_largest_budget():
    from sandbox.tools.doctor.guided import FINAL_CLASS_SWD
    from sandbox.tools.doctor.report import render_guided

    report = run_doctor(samples=500, budgets=(10, 25), samplers=["ddim", "heun"], schedules=["edm"], targets=["v"])
    assert [(r.sampler, r.schedule, r.target, r.guidance) for r in report.guided] == [
        ("ddim", "edm", "v", "cfg w=1"),
        ("heun", "edm", "v", "cfg w=1"),
    ]
    for row in report.guided:
        (cell,) = row.cells  # the largest budget only
        assert cell.budget == 25 and cell.status == OK, (row.sampler, cell.error)
        assert abs(cell.nfe - 25) <= 2 and cell.swd < FINAL_CLASS_SWD
    floor = report.class_noise_floor["class_swd"]
    assert 0 < floor < FINAL_CLASS_SWD
    assert report.exit_status == 0 and report.counts(guided=True)[OK] == 2
    assert len(report.rows) == 2 and report.counts()[OK] == 4  # the matrix is counted as before
    data = report.to_dict()
    assert [r["sampler"] for r in data["guided_rows"]] == ["ddim", "heun"]
    assert data["thresholds"]["final_class_swd"] == FINAL_CLASS_SWD and data["guidance"]["name"] == "cfg"
    assert data["class_noise_floor"]["class_swd"] == floor
    table = text_of(render_guided(report))
    assert "class_swd" in table and "cfg w=1" in table and "ddim" in table


def test_guided_rows_catch_sampling_that_ignores_the_class(monkeypatch):
    from sandbox.tools.doctor import guided

    monkeypatch.setattr(guided, "GUIDED", {"scale": 0.0})  # w = 0: the unconditional mixture for every class
    report = run_doctor(samples=300, budgets=(25,), samplers=["dpmpp_2m"], schedules=["cosine"], targets=["x0"])
    (row,) = report.guided
    assert row.guidance == "cfg w=0" and row.cells[0].status == INACCURATE and "class_swd" in row.cells[0].error
    assert report.counts()[OK] == 1 and report.exit_status == 1  # the matrix passes; the guided row fails it
