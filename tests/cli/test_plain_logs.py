"""Output that is not a terminal (a file, a pipe, a SLURM log): plain progress lines on time, whole table cells."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console
from rich.progress import Progress

from sandbox import console as sandbox_console
from sandbox.console import PROGRESS_SECONDS, PlainProgress, counter, progress, progress_seconds, status, table
from sandbox.errors import SandboxError

TRAIN_LINE = re.compile(
    r"^train step (?P<step>[\d,]+)/60 \((?P<share>[\d.]+)%\)  loss (?P<loss>\d+\.\d{4})  (?P<speed>[\d,]+) img/s  "
    r"elapsed \d+:\d\d:\d\d(?P<left>  left \d+:\d\d:\d\d)?$"
)


def plain_env(seconds: str) -> dict[str, str]:
    """This environment without anything that would make rich treat the output as a terminal or size it."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE")}
    return {**env, PROGRESS_SECONDS: seconds}


def check_log(text: str, tmp_path: Path) -> None:
    """Progress lines at every step past the first log, each with its loss, images/s and time left; and the
    summary table, wider than 80 columns, not folded: every row closes its border and the paths are whole."""
    lines = text.splitlines()
    progress_lines = [line for line in lines if line.startswith("train step")]
    matched = [TRAIN_LINE.match(line) for line in progress_lines if "loss -" not in line]  # before the first log
    assert len(matched) >= 50 and all(matched), progress_lines
    steps = [int(m["step"].replace(",", "")) for m in matched if m]
    assert steps == sorted(steps) and steps[-1] == 60
    assert all(m["left"] for m in matched if m and int(m["step"].replace(",", "")) < 60)  # time left until the end
    assert progress_lines[-1].startswith("train step 60/60 (100.0%)")

    (run_dir,) = (tmp_path / "runs").iterdir()
    grid = str(run_dir / "samples" / "final.png")
    assert len(grid) > 60
    start = next(i for i, line in enumerate(lines) if line.startswith("Summary of"))
    rows = [line for line in lines[start + 1 :] if line[:1] in "┏┃┡│└"]
    assert len(rows) >= 10 and len({len(row) for row in rows}) == 1, rows
    assert all(row.rstrip()[-1] in "┓┃┩│┘" for row in rows)
    assert any(grid in row for row in rows) and any(str(run_dir) in row for row in rows)
    assert not [line for line in lines if line.startswith("│") and not line.rstrip().endswith("│")]


@pytest.mark.slow
def test_run_into_a_file_prints_progress_lines_and_whole_table_cells(tiny_recipe, tmp_path):
    out = tmp_path / "out.txt"
    with out.open("w") as handle:
        result = subprocess.run(
            [sys.executable, "-m", "sandbox.cli", "run", str(tiny_recipe), "train.steps=60", "run.threads=1"],
            stdout=handle,
            stderr=subprocess.PIPE,
            text=True,
            env=plain_env("0"),  # a line at every step: the test does not depend on the machine's speed
            timeout=300,
        )
    assert result.returncode == 0, result.stderr
    check_log(out.read_text(), tmp_path)


def test_run_in_process_prints_progress_lines_and_whole_table_cells(tiny_recipe, tmp_path, monkeypatch, one_thread):
    """The fast loop's version of the test above: the sandbox's own console class, writing to a buffer."""
    from sandbox.engine.run import run_recipe
    from sandbox.recipe import load_recipe

    monkeypatch.setenv(PROGRESS_SECONDS, "0")
    out = type(sandbox_console.console)(file=io.StringIO(), highlight=False)
    run_recipe(load_recipe(tiny_recipe, ["train.steps=60"]), console=out)
    check_log(out.file.getvalue(), tmp_path)  # type: ignore[attr-defined]


def test_module_consoles_are_wide_off_a_terminal_and_unchanged_on_one():
    numbers = [[f"cell-{i}", 0.4219 + i, 2.25e-7 * (i + 1), "x" * 40, 123456789] for i in range(5)]
    wide = table("a table wider than 80 columns", ["name", "val loss (EMA)", "key", "note", "count"], numbers)
    console_type = type(sandbox_console.console)
    plain = console_type(file=io.StringIO(), highlight=False)
    assert plain.width == sandbox_console.PLAIN_WIDTH
    plain.print(wide)
    lines = plain.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert all(line.startswith(("a table", "┏", "┃", "┡", "│", "└")) for line in lines)
    assert len(lines) == 1 + 3 + len(numbers) + 1  # title, head, rows, bottom: no row folded
    assert "2.250e-07" in lines[4] and "123,456,789" in lines[4]

    terminal = console_type(file=io.StringIO(), force_terminal=True, color_system=None, width=80)
    assert terminal.width == 80 and type(sandbox_console.error_console) is console_type
    terminal.print(wide)
    assert max(len(line) for line in terminal.file.getvalue().splitlines()) <= 80  # type: ignore[attr-defined]


def test_bars_are_rich_on_a_terminal_and_plain_elsewhere():
    assert isinstance(counter(Console(file=io.StringIO(), force_terminal=True)), Progress)
    assert isinstance(progress(Console(file=io.StringIO(), force_terminal=True)), Progress)
    assert isinstance(counter(Console(file=io.StringIO())), PlainProgress)
    assert isinstance(progress(Console(file=io.StringIO())), PlainProgress)


def test_plain_counter_prints_on_time_and_at_the_end():
    out = Console(file=io.StringIO(), width=300)
    with PlainProgress(out, every=3600) as bar:  # no line is due in this test but the last
        task = bar.add_task("sample (ddim)", total=2048)
        for _ in range(64):
            bar.advance(task, 32 / 10)
        bar.update(task, completed=2048)
    assert out.file.getvalue().splitlines() == ["sample (ddim) 2,048/2,048 (100.0%)  elapsed 0:00:00"]  # type: ignore[attr-defined]

    out = Console(file=io.StringIO(), width=300)
    with PlainProgress(out, every=0) as bar:
        task = bar.add_task("sample (ddim)", total=2048)
        time.sleep(0.01)
        bar.advance(task, 512)
    (line,) = out.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert re.fullmatch(r"sample \(ddim\) 512/2,048 \(25\.0%\)  elapsed 0:00:00  left 0:00:0\d", line), line


def test_a_stalled_task_still_prints_on_time():
    """A slow first step or a long doctor row: the timer prints the line, elapsed time going up."""
    out = Console(file=io.StringIO(), width=300)
    with PlainProgress(out, every=0.05) as bar:
        bar.add_task("rank", total=None)
        time.sleep(0.5)
    lines = out.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert len(lines) >= 3 and all(line == "rank  elapsed 0:00:00" for line in lines), lines


def test_resumed_training_counts_its_speed_from_the_resume():
    out = Console(file=io.StringIO(), width=300)
    bar = progress(out)
    assert isinstance(bar, PlainProgress)
    bar.every = 0
    task = bar.add_task("train", total=600_000, loss="-", speed="-")
    bar.update(task, completed=1_199)  # resumed at step 1,199
    time.sleep(0.05)
    bar.update(task, loss="0.0412", speed="834")
    bar.update(task, advance=1)
    first, second = out.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert first.startswith("train step 1,199/600,000 (0.2%)  loss -  - img/s  elapsed 0:00:00")
    left = re.fullmatch(
        r"train step 1,200/600,000 \(0\.2%\)  loss 0\.0412  834 img/s  elapsed 0:00:00  left (\d+):\d\d:\d\d", second
    )
    assert left and int(left[1]) >= 5, second  # one step in 0.05 s or more: hours left, not seconds


def test_status_prints_its_text_then_on_time(monkeypatch):
    monkeypatch.setenv(PROGRESS_SECONDS, "0.05")
    out = Console(file=io.StringIO(), width=300)
    with status("running cell a (lr=0.001, seed 0)", out):
        time.sleep(0.3)
    lines = out.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert lines[0] == "running cell a (lr=0.001, seed 0)"
    assert len(lines) >= 3 and lines[1] == "running cell a (lr=0.001, seed 0)  elapsed 0:00:00"


@pytest.mark.parametrize(("value", "seconds"), [(None, 30.0), ("", 30.0), ("0", 0.0), ("2.5", 2.5)])
def test_progress_seconds_reads_the_environment(monkeypatch, value, seconds):
    if value is None:
        monkeypatch.delenv(PROGRESS_SECONDS, raising=False)
    else:
        monkeypatch.setenv(PROGRESS_SECONDS, value)
    assert progress_seconds() == seconds


@pytest.mark.parametrize("value", ["-1", "soon", "nan", "inf"])
def test_progress_seconds_refuses_what_is_not_a_duration(monkeypatch, value):
    monkeypatch.setenv(PROGRESS_SECONDS, value)
    with pytest.raises(SandboxError, match=PROGRESS_SECONDS):
        progress_seconds()


def test_doctor_prints_progress_lines_and_a_whole_table(monkeypatch, one_thread):
    from sandbox.tools.doctor.oracle import run_doctor
    from sandbox.tools.doctor.report import render

    monkeypatch.setenv(PROGRESS_SECONDS, "0")
    out = type(sandbox_console.console)(file=io.StringIO(), highlight=False)
    budgets = (4, 8, 12, 16)
    report = run_doctor(
        samples=100, budgets=budgets, samplers=["ddim"], schedules=["cosine"], targets=["v"], console=out
    )
    progress_lines = out.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert progress_lines and all(line.startswith("doctor: ddim / ") for line in progress_lines), progress_lines
    assert re.search(r" (\d+)/\1 \(100\.0%\)  elapsed \d+:\d\d:\d\d$", progress_lines[-1]), progress_lines
    out.file = io.StringIO()
    out.print(render(report))
    rows = [line for line in out.file.getvalue().splitlines() if line[:1] in "┏┃┡│└"]  # type: ignore[attr-defined]
    assert len(rows) == 3 + len(report.rows) + 1, rows  # the table is wider than 80 columns
    assert len(rows[0]) > 80 and "…" not in "".join(rows) and all(f"NFE ~{b}" in rows[1] for b in budgets)


def test_sweep_prints_each_cell_as_it_starts_and_a_whole_summary_table(tiny_recipe, monkeypatch, one_thread):
    from sandbox.tools.summary import summarize
    from sandbox.tools.sweep import parse_axis, plan_sweep, run_sweep

    monkeypatch.setenv(PROGRESS_SECONDS, "0")
    fast = ["train.steps=10", "train.val_every=5", "train.sample_every=0", "eval.num_samples=32"]
    plan = plan_sweep(tiny_recipe, fast, axes=[parse_axis("denoiser.hidden=8,16")])
    out = type(sandbox_console.console)(file=io.StringIO(), highlight=False)
    run_sweep(plan, console=out)
    lines = out.file.getvalue().splitlines()  # type: ignore[attr-defined]
    started = [i for i, line in enumerate(lines) if line.startswith("running cell ")]
    ended = [i for i, line in enumerate(lines) if line.startswith(("[1/2]", "[2/2]"))]
    assert len(started) == len(ended) == 2 and started[0] < ended[0] < started[1] < ended[1], lines

    out.file = io.StringIO()
    summarize(plan.sweep_dir, console=out, write=False)
    rows = [line for line in out.file.getvalue().splitlines() if line[:1] in "┏┃┡│└"]  # type: ignore[attr-defined]
    assert len(rows) >= 5 and len({len(row) for row in rows}) == 1 and "…" not in "".join(rows), rows
    assert all(row.rstrip()[-1] in "┓┃┩│┘" for row in rows)


def test_tune_steps_prints_its_evaluations(tmp_path, monkeypatch, one_thread):
    from sandbox.engine.solve import load_target
    from sandbox.tools.tune import tune_grid

    monkeypatch.setenv(PROGRESS_SECONDS, "0")
    oracle = Path(__file__).resolve().parents[2] / "recipes" / "oracle_mixture.yaml"
    target = load_target(oracle, [f"run.output={tmp_path}"], Console(file=io.StringIO()))
    out = Console(file=io.StringIO(), width=300)
    tuned = tune_grid(target, 5, sampler="ddim", batch=8, iterations=6, reference_steps=20, console=out)
    lines = out.file.getvalue().splitlines()  # type: ignore[attr-defined]
    search = [line for line in lines if line.startswith("tune-steps: ddim at NFE 5 ")]
    counts = [int(re.split(r"[ /]", line)[5]) for line in search]
    assert set(counts) == set(range(tuned.evaluations + 1)) and "left " in search[1], lines
    assert search[-1].startswith(f"tune-steps: ddim at NFE 5 {tuned.evaluations}/{tuned.evaluations} (100.0%)")
