#!/usr/bin/env bash
# Shared helpers for the tpu/ scripts (sourced, not run). Every script accepts --dry-run: the
# commands are printed (one per line, shell-quoted) instead of being run.

set -euo pipefail

DRY_RUN=0

# quote ARG: ARG as one shell word, single-quoted only when it needs to be (copy-pasteable).
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# run CMD ARGS...: print the command (always), run it unless --dry-run.
run() {
  local line="+" arg
  for arg in "$@"; do
    line+=" $(quote "${arg}")"
  done
  echo "${line}"
  if [[ "${DRY_RUN}" -eq 0 ]]; then
    "$@"
  fi
}

die() {
  echo "error: $*" >&2
  exit 2
}

# need NAME VALUE: fail with a clear message when a required option is missing.
need() {
  [[ -n "$2" ]] || die "missing required option --$1 (see --help)"
}

# tpu_ssh NAME ZONE PROJECT COMMAND: run COMMAND on every worker of the TPU VM at once.
tpu_ssh() {
  local name=$1 zone=$2 project=$3 command=$4
  local args=(gcloud compute tpus tpu-vm ssh "${name}" --zone="${zone}" --worker=all --command="${command}")
  if [[ -n "${project}" ]]; then
    args+=(--project="${project}")
  fi
  run "${args[@]}"
}
