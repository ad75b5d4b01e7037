#!/usr/bin/env bash
# One-shot GPU suite: on a machine with an NVIDIA GPU, install what it lacks and run the sampling and
# train-step comparison at the real SD1.5 + v2 sizes. Markdown table on stdout, rows in gpu_suite.json
# (or --json PATH). On one H200 the default parts, timed in separate runs, took about 1.5 min (ours,
# per attention kernel), 1 min (diffusers) and 2.5 min (train step, batch 4; over 3.3 min once, its
# compile grown): 7-8 min or more together, not yet timed in one run (BENCHMARKS.md).
#
#   bash benchmarks/gpu.sh                 # pip-install the packages missing here (jax[cuda12] where nvidia-smi
#                                          # is and JAX sees no GPU; torch, diffusers, transformers, this
#                                          # package's needs), then run
#   bash benchmarks/gpu.sh --no-install    # run with what is installed
#   bash benchmarks/gpu.sh --smoke --no-install   # tiny configs on any machine (CPU), same code path
#   bash benchmarks/gpu.sh --parts train --train-batch 4 8 --profile prof   # train step only, at two batches,
#                                          # one step profiled (prof/train_step_profile.md)
#
# The package is run from this checkout (benchmarks/gpu_suite.py puts it on sys.path), not installed.
# Measured on one H200 (2026-12-04, BENCHMARKS.md): its image had JAX with CUDA 13 and no network; the
# one package it lacked (diffusers) was carried as a wheel, and the suite run with --no-install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
install=1
args=()
for a in "$@"; do
  if [[ "$a" == "--no-install" ]]; then install=0; else args+=("$a"); fi
done
if (( install )); then
  missing=()
  if command -v nvidia-smi >/dev/null; then  # JAX for the GPU, only where there is one
    "$PY" -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")' 2>/dev/null || missing+=("jax[cuda12]")
  fi
  for pair in torch:torch diffusers:diffusers transformers:transformers flax:flax optax:optax \
              orbax.checkpoint:orbax-checkpoint safetensors:safetensors ml_dtypes:ml_dtypes tokenizers:tokenizers \
              tensorboardX:tensorboardX yaml:pyyaml tqdm:tqdm huggingface_hub:huggingface_hub scipy:scipy; do
    "$PY" -c "import ${pair%%:*}" 2>/dev/null || missing+=("${pair#*:}")
  done
  if (( ${#missing[@]} )); then
    echo "installing: ${missing[*]}" >&2
    "$PY" -m pip install -q "${missing[@]}" || echo "warning: pip could not install ${missing[*]}; running with what is here" >&2
  fi
fi
exec "$PY" -m benchmarks.gpu_suite "${args[@]}"
