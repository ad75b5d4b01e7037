#!/usr/bin/env bash
# One-shot GPU suite: on a machine with an NVIDIA GPU, install what it needs and run the sampling and
# train-step comparison at the real SD1.5 + v2 sizes (< 8 min once installed). Markdown table on
# stdout, rows in gpu_suite.json (or --json PATH).
#
#   bash benchmarks/gpu.sh                 # install (jax[cuda12], torch, diffusers, transformers, this
#                                          # package) then run
#   bash benchmarks/gpu.sh --no-install    # run with what is installed
#   bash benchmarks/gpu.sh --smoke --no-install   # tiny configs on any machine (CPU), same code path
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
install=1
args=()
for a in "$@"; do
  if [[ "$a" == "--no-install" ]]; then install=0; else args+=("$a"); fi
done
if (( install )); then
  "$PY" -m pip install -q "jax[cuda12]" torch diffusers transformers
  "$PY" -m pip install -q --no-deps -e .
fi
exec "$PY" -m benchmarks.gpu_suite "${args[@]}"
