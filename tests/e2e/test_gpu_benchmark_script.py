"""benchmarks/gpu_throughput.py (what benchmarks/gpu.sh runs) works end to end in its CPU dry-run mode, and
refuses a missing CUDA device with one clear message."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def gpu_throughput(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setenv("SANDBOX_BENCH_RESULTS", str(tmp_path / "results"))
    spec = importlib.util.spec_from_file_location("gpu_throughput", BENCHMARKS / "gpu_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module.harness, "RESULTS", tmp_path / "results")
    return module


def test_cpu_dry_run_reports_every_contender(gpu_throughput, tmp_path, capsys):
    peers = "bf16" if importlib.util.find_spec("diffusers") else "none"
    argv = ["--device", "cpu", "--steps", "1", "--warmup", "0", "--batch", "2", "--channels", "32"]
    argv += ["--modes", "fp32", "--peer-modes", peers, "--images", "16"]
    assert gpu_throughput.main(argv) == 0
    out = capsys.readouterr().out
    assert "sandbox Trainer   fp32" in out
    report = (tmp_path / "results" / "gpu-dry-run.md").read_text()
    assert "| sandbox Trainer | fp32 |" in report
    if peers != "none":
        assert "| diffusers UNet2DModel, bare loop | bf16 |" in report
        assert "best sandbox / best diffusers" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_missing_cuda_is_one_clear_message(gpu_throughput):
    with pytest.raises(SystemExit) as info:
        gpu_throughput.main(["--steps", "1"])
    assert "no CUDA device" in str(info.value) and "--device cpu" in str(info.value)


@pytest.mark.parametrize(
    "argv, words", [(["--modes", "fp8"], "'fp8' is not one of"), (["--batch", "0"], "--batch must be at least 1")]
)
def test_bad_arguments_are_refused(gpu_throughput, capsys, argv, words):
    with pytest.raises(SystemExit):
        gpu_throughput.parse(argv)
    assert words in capsys.readouterr().err


def test_diffusers_peer_has_the_ddpm_parameter_count(gpu_throughput):
    """google/ddpm-cifar10-32's configuration: the same 35,746,307 parameters as the sandbox's DDPM UNet."""
    if importlib.util.find_spec("diffusers") is None:
        pytest.skip("diffusers is not installed (the optional bench extra)")
    net = gpu_throughput.harness.diffusers_unet((128, 256, 256, 256), attention_level=1, dropout=0.1)
    assert sum(p.numel() for p in net.parameters()) == 35_746_307
    assert sys.modules["harness"] is gpu_throughput.harness
