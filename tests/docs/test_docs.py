"""The docs are honest: their plugin examples work as printed, their links resolve, and README's commands are CI's."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import types
from pathlib import Path

import pytest
import torch
from rich.console import Console

from sandbox import cli, protocols
from sandbox.engine.run import run_recipe
from sandbox.recipe import load_recipe
from sandbox.registry import load_registry
from sandbox.testing import check_dataset, check_denoiser, check_sampler, register_plugin

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()
PAGES = sorted(DOCS.glob("*.md"))
FENCE = re.compile(r"^```.*?^```", flags=re.M | re.S)


def page(name: str) -> str:
    return (DOCS / name).read_text()


def blocks(name: str) -> list[str]:
    """The ```python blocks of ``docs/<name>``, in order."""
    return re.findall(r"```python\n(.*?)```", page(name), flags=re.S)


def block_module(monkeypatch, name: str, index: int, module_name: str) -> types.ModuleType:
    """The ``index``-th Python block of ``docs/<name>``, executed as module ``module_name``."""
    module = types.ModuleType(module_name)
    monkeypatch.setitem(sys.modules, module_name, module)
    exec(compile(blocks(name)[index], f"docs/{name}", "exec"), module.__dict__)
    return module


def paragraph(name: str, title: str) -> str:
    """``docs/<name>`` from a bold paragraph title to the next one (or the next heading)."""
    text = page(name)
    start = text.index(title)
    ends = [i for i in (text.find("\n\n**", start + 1), text.find("\n#", start + 1)) if i > 0]
    return text[start : min(ends)]


def anchors(text: str) -> set[str]:
    """GitHub's anchors for the headings of a Markdown text (code blocks left out)."""
    found: set[str] = set()
    counts: dict[str, int] = {}
    for title in re.findall(r"^#{1,6} (.+)$", FENCE.sub("", text), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", title.replace("`", "").strip().lower()).replace(" ", "-")
        found.add(f"{slug}-{counts[slug]}" if slug in counts else slug)
        counts[slug] = counts.get(slug, 0) + 1
    return found


@pytest.mark.slow
def test_plugin_page_schedule_registers_trains_and_samples(monkeypatch, tiny_recipe):
    monkeypatch.setenv("SANDBOX_PLUGINS", "")  # the built-ins only: the example package may be installed too
    registry = load_registry({"docs-loglinear": block_module(monkeypatch, "plugins.md", 0, "docs_loglinear")})
    component = registry.get("schedule", "loglinear")
    assert component.description == "Log-SNR linear in t."

    schedule = component.build()
    alpha, sigma = schedule.alpha_sigma(torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(alpha**2 + sigma**2, torch.ones(3))
    assert torch.allclose(schedule.log_snr(torch.tensor([0.0, 1.0])), torch.tensor([10.0, -10.0]), atol=1e-4)

    for sampler in registry.names("sampler"):
        recipe = load_recipe(
            tiny_recipe,
            [
                "schedule.name=loglinear",
                "schedule.lambda_min=-12",
                f"sampler.name={sampler}",
                "sampler.steps=8",
                "train.steps=10",
                "train.sample_every=0",
            ],
            registry=registry,
        )
        run = run_recipe(recipe, console=Console(record=True))
        samples = torch.load(run / "samples" / "final.pt")
        assert bool(torch.isfinite(samples).all())


def test_readme_commands_match_ci():
    ci = (ROOT / ".ci" / "run").read_text()
    setup_and_test = 'pip install -e ".[dev]" && python -m pytest -q'
    assert setup_and_test in README
    assert 'pip install -e ".[dev]" && sandbox run recipes/quickstart.yaml' in README
    assert 'python -m pip install -q -e ".[dev]" && python -m pytest -q' in ci
    assert (ROOT / "recipes" / "quickstart.yaml").exists()


@pytest.mark.slow
def test_plugin_page_dataset_conforms_and_trains(monkeypatch, tmp_path):
    """The dataset of docs/plugins.md on the digits written to a .npz file: checked by sandbox.testing, split
    the same for every run, stored for the device, and trained on unconditionally and class-conditionally."""
    import numpy as np
    from sklearn.datasets import load_digits

    module = block_module(monkeypatch, "plugins.md", 1, "my_dataset")
    digits = load_digits()
    path = tmp_path / "digits.npz"
    np.savez(path, x=digits.images[:, None].astype(np.uint8), y=digits.target, classes=np.array(list("0123456789")))
    with register_plugin(module, "my-dataset") as registry:
        splits = check_dataset("my_npz", module.MyNpzParams(path=str(path)), registry=registry)
        assert splits.shape == (1, 8, 8) and splits.classes == [str(d) for d in range(10)]
        assert (len(splits.train), len(splits.val)) == (1617, 180)
        x, label = splits.train[0]
        assert x.dtype == torch.float32 and isinstance(label, int) and 0 <= label < 10
        assert isinstance(splits.train, protocols.StoredItems) and isinstance(splits.train, protocols.StoredLabels)
        stored = torch.cat([splits.train.stored(), splits.val.stored()]).float()
        assert stored.min() == -1 and stored.max() == 1  # the file's range, scaled to [-1, 1]
        decoded = splits.train.decode(splits.train.stored()[:3], torch.Generator())
        assert torch.equal(decoded, torch.stack([splits.train[i][0] for i in range(3)]))
        again = check_dataset("my_npz", module.MyNpzParams(path=str(path)), registry=registry)
        assert torch.equal(again.val.stored(), splits.val.stored())  # one split for every run
        real = splits.evaluate(torch.stack([splits.val[i][0] for i in range(len(splits.val))]))
        noise = splits.evaluate(torch.randn(180, 1, 8, 8))
        assert real == {"mean_error": 0.0, "std_error": 0.0} and noise["std_error"] > 0.3

        unlabelled = check_dataset("my_npz", module.MyNpzParams(path=str(path), labels=False), registry=registry)
        assert unlabelled.classes is None and not isinstance(unlabelled.train, protocols.StoredLabels)
        assert isinstance(unlabelled.train[0], torch.Tensor)

        quickstart = str(ROOT / "recipes" / "quickstart.yaml")
        data = ["dataset.name=my_npz", f"dataset.path={path}"]
        assert cli.main(["show", quickstart, *data, "dataset.val_fraction=1.5"]) == 2
        assert cli.main(["show", quickstart, "dataset.name=my_npz", "dataset.path=mine.csv"]) == 2
        few = ["train.steps=6", "train.val_every=3", "eval.num_samples=20", "sampler.steps=3", "run.threads=1"]
        assert cli.main(["run", quickstart, *data, *few, f"run.output={tmp_path / 'plain'}"]) == 0
        conditional = ["train.conditional=true", "guidance.name=cfg"]
        assert cli.main(["run", quickstart, *data, *few, *conditional, f"run.output={tmp_path / 'cond'}"]) == 0
        missing = ["dataset.name=my_npz", f"dataset.path={tmp_path / 'none.npz'}", f"run.output={tmp_path / 'no'}"]
        assert cli.main(["run", quickstart, *missing]) == 2
    (run,) = (tmp_path / "plain").glob("quickstart-*")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["train"]["steps"] == 6
    assert set(summary["sample_quality"]["generated"]) >= {"mean_error", "std_error"}
    assert (
        summary["sample_quality"]["real_heldout"]["mean_error"] < summary["sample_quality"]["generated"]["mean_error"]
    )
    (conditional_run,) = (tmp_path / "cond").glob("quickstart-*")
    summary = json.loads((conditional_run / "summary.json").read_text())
    assert summary["classes"] == [str(d) for d in range(10)] and summary["train"]["steps"] == 6


@pytest.mark.slow
def test_plugin_page_sampler_conforms_and_runs(monkeypatch, tiny_recipe):
    module = block_module(monkeypatch, "plugins.md", 2, "my_sampler")
    with register_plugin(module, "my-sampler") as registry:
        sampler = check_sampler("my_ancestral", registry=registry)
        assert sampler.nfe(registry.get("schedule", "cosine").build()) == 200
        assert (
            cli.main(
                [
                    "run",
                    str(tiny_recipe),
                    "sampler.name=my_ancestral",
                    "sampler.steps=8",
                    "train.steps=10",
                    "train.sample_every=0",
                ]
            )
            == 0
        )
        assert cli.main(["show", str(tiny_recipe), "sampler.name=my_ancestral", "sampler.steps=0"]) == 2


@pytest.mark.slow
def test_plugin_page_denoiser_conforms_and_trains_on_digits(monkeypatch, tmp_path):
    module = block_module(monkeypatch, "plugins.md", 3, "my_denoiser")
    with register_plugin(module, "my-denoiser") as registry:
        check_denoiser("tiny_conv", (1, 8, 8), registry=registry)
        check_denoiser("tiny_conv", (3, 16, 16), module.TinyConvParams(width=7), registry=registry)
        assert (
            cli.main(
                [
                    "run",
                    str(ROOT / "recipes" / "quickstart.yaml"),
                    "denoiser.name=tiny_conv",
                    "train.steps=20",
                    "train.val_every=10",
                    "eval.num_samples=16",
                    "sampler.steps=5",
                    f"run.output={tmp_path}",
                ]
            )
            == 0
        )
        assert (  # the conditional form: built with num_classes, guided by classifier-free guidance
            cli.main(
                [
                    "run",
                    str(ROOT / "recipes" / "quickstart.yaml"),
                    "denoiser.name=tiny_conv",
                    "train.conditional=true",
                    "guidance.name=cfg",
                    "train.steps=5",
                    "train.val_every=0",
                    "eval.num_samples=20",
                    "sampler.steps=3",
                    f"run.output={tmp_path / 'conditional'}",
                ]
            )
            == 0
        )
        assert (
            cli.main(
                ["show", str(ROOT / "recipes" / "quickstart.yaml"), "dataset.name=toy2d", "denoiser.name=tiny_conv"]
            )
            == 0
        )  # the shape is refused when the run builds it
        assert (
            cli.main(
                [
                    "run",
                    str(ROOT / "recipes" / "quickstart.yaml"),
                    "dataset.name=toy2d",
                    "denoiser.name=tiny_conv",
                    f"run.output={tmp_path / 'refused'}",
                ]
            )
            == 2
        )
    (run,) = tmp_path.glob("quickstart-*")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["denoiser_parameters"] > 0 and summary["train"]["steps"] == 20
    (conditional,) = (tmp_path / "conditional").glob("quickstart-*")
    summary = json.loads((conditional / "summary.json").read_text())
    assert summary["classes"] == [str(d) for d in range(10)] and summary["sampling"]["nfe_per_sample"] == 6


def test_contract_tables_name_what_the_protocol_module_defines():
    """Every type and method the docs' contract tables name exists in sandbox.protocols, and the fields agree."""
    contract = paragraph("plugins.md", "**The contract, stated once.**")
    named = set(re.findall(r"`(?:a |an )?([A-Z][A-Za-z]+)[`(]", contract))
    assert {"DataSplits", "Schedule", "DenoiserNetwork", "AnalyticDenoiser", "Sampler", "StepInfo", "Denoise"} <= named
    for name in named:
        assert hasattr(protocols, name), f"docs/plugins.md names {name}, which sandbox.protocols does not define"
    fields = re.search(r"`DataSplits\((.*?)\)`", contract).group(1)
    listed = [part.split("=")[0].strip() for part in fields.split(",")]
    assert listed == [f.name for f in dataclasses.fields(protocols.DataSplits)]
    assert "`forward(x, c_noise)`" in contract and "`bind(data)`" in contract and "`nfe(schedule)`" in contract
    assert hasattr(protocols.DenoiserNetwork, "forward") and hasattr(protocols.AnalyticDenoiser, "bind")
    assert hasattr(protocols.Sampler, "nfe") and set(protocols.StepInfo.__annotations__) == {"x", "i", "t", "denoised"}
    schedule_table = paragraph("sampling.md", "**One schedule protocol.**")
    methods = re.findall(r"^\| `(\w+)\(", schedule_table, flags=re.M)
    assert methods == ["alpha_sigma", "log_snr", "t_from_log_snr", "timesteps", "sample_t", "c_noise"]
    for method in methods:
        assert callable(getattr(protocols.Schedule, method)), method


def test_readme_lists_every_command():
    """README's command table has one row per command the CLI registers, and no other."""
    table = README[README.index("## Commands") : README.index("\n## ", README.index("## Commands") + 1)]
    listed = re.findall(r"^\| `sandbox ([a-z-]+)", table, flags=re.M)
    assert sorted(listed) == sorted(cli.commands())


def test_readme_is_a_front_page():
    assert len(README.splitlines()) <= 220
    assert "**92%**" in README and "**95%**" in README  # the quickstart's figure, against real digits
    assert 'python -m pytest -m "not slow"' in README
    assert "**98.8%**" in README and "**95.6%**" in README  # the conditional recipe's figure, against real digits


def test_readme_says_what_the_sandbox_does_not_do_yet():
    """A newcomer learns the limits before looking for them: README's "Not yet" list, one point a line."""
    section = README[README.index("## Not yet") : README.index("\n## ", README.index("## Not yet") + 1)]
    points = re.findall(r"^- ", section, flags=re.M)
    assert len(points) >= 4 and "class labels only" in section and "latent" in section


def links(text: str) -> list[str]:
    """The targets of a Markdown text's inline links, code left out."""
    prose = re.sub(r"`[^`]*`", "", FENCE.sub("", text))
    return re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", prose)


@pytest.mark.parametrize("path", [ROOT / "README.md", *PAGES], ids=lambda p: p.name)
def test_relative_links_resolve(path):
    """Every relative link of README and docs/ names an existing file, and a heading there when it has an anchor."""
    text = path.read_text()
    checked = 0
    for target in links(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        assert resolved.exists(), f"{path.name}: link {target!r} names {resolved}, which does not exist"
        if anchor and resolved.suffix == ".md":
            assert anchor in anchors(resolved.read_text()), f"{path.name}: link {target!r}: no heading #{anchor}"
        checked += 1
    assert checked or path.name not in ("README.md", "index.md")


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_python_blocks_compile(path):
    """No Python example in docs/ rots unnoticed: every block at least compiles."""
    for i, block in enumerate(re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)):
        compile(block, f"docs/{path.name}, python block {i}", "exec")


def test_architecture_page_names_every_module():
    """docs/architecture.md has a row for every module of every floor, as a path inside its floor's folder."""
    page_text = page("architecture.md")
    floors = {
        "sandbox": sorted((ROOT / "sandbox").glob("*.py")),
        "sandbox/engine": sorted((ROOT / "sandbox" / "engine").glob("*.py")),
        "sandbox/tools": sorted((ROOT / "sandbox" / "tools").rglob("*.py")),
        "sandbox/cli": sorted((ROOT / "sandbox" / "cli").glob("*.py")),
    }
    missing = [
        f"{floor}/{name}"
        for floor, paths in floors.items()
        for name in (path.relative_to(ROOT / floor).as_posix() for path in paths)
        if not name.endswith(("__init__.py", "__main__.py")) and f"| `{name}` |" not in page_text
    ]
    assert not missing, f"docs/architecture.md has no row for {missing}"
