#!/usr/bin/env bash
# Show the last lines of every worker's training log.
#   tpu/logs.sh --name adiff --zone us-east5-a [--lines 20] [--dry-run]
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

NAME="" ZONE="" PROJECT="" LINES=20
usage() { sed -n '2,3p' "${BASH_SOURCE[0]}"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) NAME=$2; shift 2 ;;
    --zone) ZONE=$2; shift 2 ;;
    --project) PROJECT=$2; shift 2 ;;
    --lines) LINES=$2; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1" ;;
  esac
done
need name "${NAME}"; need zone "${ZONE}"
[[ "${LINES}" =~ ^[0-9]+$ ]] || die "--lines must be a number, got ${LINES}"
tpu_ssh "${NAME}" "${ZONE}" "${PROJECT}" "for f in ~/logs/train-*.log; do echo \"== \$f\"; tail -n ${LINES} \"\$f\"; done"
