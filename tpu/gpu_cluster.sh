#!/usr/bin/env bash
# Launch training on a GPU cluster: one process per host (each sees all its local GPUs), started
# over ssh; host 0 is the coordinator.
#   tpu/gpu_cluster.sh --hosts "gpu-0,gpu-1,gpu-2,gpu-3" --config configs/training/training.yaml \
#       --workdir /shared/runs/mm-v2 [--port 12345] [--repo animatediff_jax] [--dry-run] [-- overrides...]
# Each host runs: python -m animatediff_jax.train ... distributed.coordinator_address=gpu-0:12345
#   distributed.num_processes=4 distributed.process_id=<i>   (log: ~/logs/train-<host>.log there).
# Under SLURM, `srun python -m animatediff_jax.train ... distributed.initialize=auto` does the same.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

HOSTS="" CONFIG="" WORKDIR="" PORT=12345 REPO="animatediff_jax"  # on each host, relative to its home
parse_options --hosts=HOSTS --config=CONFIG --workdir=WORKDIR --port=PORT --repo=REPO -- "$@"
need hosts "${HOSTS}"; need config "${CONFIG}"; need workdir "${WORKDIR}"
[[ "${PORT}" =~ ^[0-9]+$ ]] || die "--port must be a number, got ${PORT}"
check_overrides "${REST[@]+"${REST[@]}"}"

IFS=',' read -r -a HOST_LIST <<< "${HOSTS}"
N=${#HOST_LIST[@]}
COORDINATOR="${HOST_LIST[0]}:${PORT}"
check_config "${CONFIG}" "${WORKDIR}" "distributed.coordinator_address=${COORDINATOR}" "distributed.num_processes=${N}" \
  distributed.process_id=0 "${REST[@]+"${REST[@]}"}"
EXTRA=""
for o in "${REST[@]+"${REST[@]}"}"; do EXTRA+=" $(printf '%q' "${o}")"; done

for i in "${!HOST_LIST[@]}"; do
  host=${HOST_LIST[$i]}
  run ssh "${host}" "cd ${REPO} && mkdir -p ~/logs && nohup env JAX_COMPILATION_CACHE_DIR=\$HOME/.cache/jax python -m animatediff_jax.train --config $(printf '%q' "${CONFIG}") --workdir $(printf '%q' "${WORKDIR}") distributed.coordinator_address=${COORDINATOR} distributed.num_processes=${N} distributed.process_id=${i}${EXTRA} > ~/logs/train-${host}.log 2>&1 &"
done
