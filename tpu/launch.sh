#!/usr/bin/env bash
# Start training on every worker of a TPU VM at once, in the background, one log per worker.
#   tpu/launch.sh --name adiff --zone us-east5-a --config configs/training/training.yaml \
#       --workdir gs://bucket/runs/mm-v2 [--env KEY=VALUE]... [--dry-run] [-- key=value overrides...]
# Logs: ~/logs/train-<hostname>.log on each worker (tpu/logs.sh shows them). JAX finds the other
# workers by itself on a TPU pod (distributed.initialize=auto).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

NAME="" ZONE="" PROJECT="" CONFIG="" WORKDIR=""
ENVS=()
parse_options --name=NAME --zone=ZONE --project=PROJECT --config=CONFIG --workdir=WORKDIR --env+ENVS -- "$@"
need name "${NAME}"; need zone "${ZONE}"; need config "${CONFIG}"; need workdir "${WORKDIR}"
check_overrides "${REST[@]+"${REST[@]}"}"

# The workers run HEAD as tpu/install.sh copied it: a relative --config must be there, as committed.
if [[ "${CONFIG}" != /* ]]; then
  git -C "${CHECKOUT}" cat-file -e "HEAD:${CONFIG}" 2>/dev/null \
    || die "--config ${CONFIG}: not in this checkout's HEAD, which tpu/install.sh copies to the workers (commit it and install again, or give an absolute path on the workers)"
  git -C "${CHECKOUT}" diff --quiet HEAD -- "${CONFIG}" \
    || echo "warning: --config ${CONFIG}: has uncommitted changes; the workers read HEAD's (commit it and run tpu/install.sh again)" >&2
fi
check_config "${CONFIG}" "${WORKDIR}" distributed.initialize=auto "${REST[@]+"${REST[@]}"}"
[[ "${WORKDIR}" == gs://* ]] \
  || echo "warning: --workdir ${WORKDIR}: not a gs:// path, so each worker writes its own disk; a slice of several workers needs a folder they all share for its checkpoints" >&2

# Environment every worker needs: a persistent compilation cache and TPU-friendly defaults.
ENV_PREFIX="JAX_COMPILATION_CACHE_DIR=\$HOME/.cache/jax TF_CPP_MIN_LOG_LEVEL=2"
for kv in "${ENVS[@]+"${ENVS[@]}"}"; do
  [[ "${kv}" == *=* ]] || die "--env takes KEY=VALUE, got ${kv}"
  ENV_PREFIX+=" $(printf '%q' "${kv}")"
done
OVERRIDES="distributed.initialize=auto"
for o in "${REST[@]+"${REST[@]}"}"; do OVERRIDES+=" $(printf '%q' "${o}")"; done

TRAIN="cd ~/animatediff_jax && mkdir -p ~/logs && nohup env ${ENV_PREFIX} python -m animatediff_jax.train --config $(printf '%q' "${CONFIG}") --workdir $(printf '%q' "${WORKDIR}") ${OVERRIDES} > ~/logs/train-\$(hostname).log 2>&1 &"
tpu_ssh "${NAME}" "${ZONE}" "${PROJECT}" "${TRAIN}"
