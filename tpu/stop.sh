#!/usr/bin/env bash
# Stop training on every worker (SIGTERM: the trainer saves a checkpoint first); --delete also
# deletes the TPU VM.
#   tpu/stop.sh --name adiff --zone us-east5-a [--delete] [--dry-run]
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

NAME="" ZONE="" PROJECT="" DELETE=0
parse_options --name=NAME --zone=ZONE --project=PROJECT --delete!DELETE -- "$@"
need name "${NAME}"; need zone "${ZONE}"

# SIGTERM the trainer, wait up to 5 minutes for its final checkpoint, then make sure it is gone.
tpu_ssh "${NAME}" "${ZONE}" "${PROJECT}" \
  "pkill -TERM -f 'python -m animatediff_jax.train' || true; for _ in \$(seq 60); do pgrep -f 'python -m animatediff_jax.train' >/dev/null || exit 0; sleep 5; done; pkill -KILL -f 'python -m animatediff_jax.train' || true"
if [[ "${DELETE}" -eq 1 ]]; then
  args=(gcloud compute tpus tpu-vm delete "${NAME}" --zone="${ZONE}" --quiet)
  if [[ -n "${PROJECT}" ]]; then args+=(--project="${PROJECT}"); fi
  run "${args[@]}"
fi
