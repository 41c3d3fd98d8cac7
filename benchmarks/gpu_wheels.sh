#!/usr/bin/env bash
# Download, on a machine with a package index, the wheels benchmarks/gpu.sh installs on a GPU machine that
# has torch, torchvision, pluggy and rich but no index: omegaconf (the recipe loader), safetensors, and
# diffusers for the side-by-side run, with their dependencies. torch's and torchvision's own dependencies
# (numpy, Pillow, filelock, fsspec, typing-extensions, ...) are left out: the GPU machine has them.
#
#   bash benchmarks/gpu_wheels.sh                       # wheels for this machine's Python
#   PYTHON_VERSION=3.12 bash benchmarks/gpu_wheels.sh   # wheels for another Python on the GPU machine
#
# The wheels land in benchmarks/wheels/ (ignored by git); carry that folder to the GPU machine.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="${WHEELS:-$here/wheels}"
python="${PYTHON:-python}"
version="${PYTHON_VERSION:-$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')}"
mkdir -p "$dest"
"$python" -m pip download --dest "$dest" --only-binary=:all: --python-version "$version" \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    "omegaconf>=2.3" "safetensors>=0.4" diffusers "setuptools>=64" wheel
# what torch and torchvision already bring to the GPU machine
for present in numpy pillow filelock fsspec typing_extensions jinja2 markupsafe networkx sympy mpmath; do
    find "$dest" -iname "${present}-*.whl" -delete
done
du -sh "$dest"
