#!/usr/bin/env bash
# What `make bench-gpu` needs on a bare GPU machine of this workplace (see benchmarks/gpu_pack.py): run from the
# repository root there with `.whl` carried: the wheels its image lacks (diffusers, omegaconf, soundfile, soxr, cffi,
# pycparser) and `.whl/pack` (made here by `python -m benchmarks.gpu_pack pack .whl/pack`).
set -euo pipefail
OUT=${OUT:-benchmarks/results}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
python3 -m benchmarks.gpu_pack unpack .whl/pack /tmp/site
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -m benchmarks.gpu --speech .whl/pack/speech10.wav --out "$OUT/gpu.json" "$@" 2>&1 | grep -v -i warn
