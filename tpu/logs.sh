#!/usr/bin/env bash
# Show the last lines of every worker's training log.
#   tpu/logs.sh --name adiff --zone us-east5-a [--lines 20] [--dry-run]
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

NAME="" ZONE="" PROJECT="" LINES=20
parse_options --name=NAME --zone=ZONE --project=PROJECT --lines=LINES -- "$@"
need name "${NAME}"; need zone "${ZONE}"
[[ "${LINES}" =~ ^[0-9]+$ ]] || die "--lines must be a number, got ${LINES}"
tpu_ssh "${NAME}" "${ZONE}" "${PROJECT}" "for f in ~/logs/train-*.log; do echo \"== \$f\"; tail -n ${LINES} \"\$f\"; done"
