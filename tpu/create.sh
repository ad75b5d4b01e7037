#!/usr/bin/env bash
# Create a Cloud TPU VM (single host or pod slice).
#   tpu/create.sh --name adiff --zone us-east5-a --type v5p-128 --version v2-alpha-tpuv5 [--spot] [--dry-run]
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

NAME="" ZONE="" TYPE="" VERSION="" PROJECT="" SPOT=0
usage() { sed -n '2,3p' "${BASH_SOURCE[0]}"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) NAME=$2; shift 2 ;;
    --zone) ZONE=$2; shift 2 ;;
    --type) TYPE=$2; shift 2 ;;
    --version) VERSION=$2; shift 2 ;;
    --project) PROJECT=$2; shift 2 ;;
    --spot) SPOT=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1" ;;
  esac
done
need name "${NAME}"; need zone "${ZONE}"; need type "${TYPE}"; need version "${VERSION}"

args=(gcloud compute tpus tpu-vm create "${NAME}" --zone="${ZONE}" --accelerator-type="${TYPE}"
      --version="${VERSION}")
if [[ -n "${PROJECT}" ]]; then args+=(--project="${PROJECT}"); fi
if [[ "${SPOT}" -eq 1 ]]; then args+=(--spot); fi
run "${args[@]}"
