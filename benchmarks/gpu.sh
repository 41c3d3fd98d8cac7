#!/usr/bin/env bash
# Training throughput on one GPU, synthetic data (nothing is downloaded), at most about 5 minutes:
# img/s of the DDPM CIFAR-10 configuration (recipes/ddpm_cifar10.yaml's UNet, batch 128) through the sandbox
# Trainer in fp32, bf16 and bf16 + torch.compile, next to diffusers' UNet2DModel of the same size in a bare
# bf16 loop (eager and compiled) on the same card.
#
#   bash benchmarks/gpu.sh                              # on the GPU machine, from the repository root
#   bash benchmarks/gpu.sh --device cpu --steps 2 --warmup 1 --batch 4 --channels 32 --modes fp32   # a dry run
#
# Missing packages are installed from benchmarks/wheels/ (see benchmarks/gpu_wheels.sh) when that folder
# exists; the project itself is installed without dependencies when it is not importable.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
python="${PYTHON:-python}"
wheels="${WHEELS:-$here/wheels}"
cd "$root"

missing=()
"$python" -c "import omegaconf" 2>/dev/null || missing+=(omegaconf)
"$python" -c "import safetensors" 2>/dev/null || missing+=(safetensors)
"$python" -c "import diffusers" 2>/dev/null || missing+=(diffusers)
"$python" -c "import sandbox_plugins" 2>/dev/null || "$python" -c "import setuptools" 2>/dev/null \
    || missing+=(setuptools wheel)
if ((${#missing[@]})); then
    if [[ -d "$wheels" ]]; then
        echo "installing ${missing[*]} from $wheels"
        "$python" -m pip install --quiet --no-index --find-links "$wheels" "${missing[@]}"
    else
        echo "missing ${missing[*]} and no wheels folder at $wheels (make one with benchmarks/gpu_wheels.sh)" >&2
    fi
fi
if ! "$python" -c "import sandbox_plugins" 2>/dev/null; then
    echo "installing the project (no dependencies)"
    "$python" -m pip install --quiet --no-deps --no-build-isolation -e "$root"
fi
exec "$python" "$here/gpu_throughput.py" "$@"
