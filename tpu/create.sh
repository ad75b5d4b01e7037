#!/usr/bin/env bash
# Create a Cloud TPU VM (single host or pod slice).
#   tpu/create.sh --name adiff --zone us-east5-a --type v5p-128 --version v2-alpha-tpuv5 [--spot] [--dry-run]
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

NAME="" ZONE="" TYPE="" VERSION="" PROJECT="" SPOT=0
parse_options --name=NAME --zone=ZONE --type=TYPE --version=VERSION --project=PROJECT --spot!SPOT -- "$@"
need name "${NAME}"; need zone "${ZONE}"; need type "${TYPE}"; need version "${VERSION}"

args=(gcloud compute tpus tpu-vm create "${NAME}" --zone="${ZONE}" --accelerator-type="${TYPE}"
      --version="${VERSION}")
if [[ -n "${PROJECT}" ]]; then args+=(--project="${PROJECT}"); fi
if [[ "${SPOT}" -eq 1 ]]; then args+=(--spot); fi
run "${args[@]}"
