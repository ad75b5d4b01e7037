#!/usr/bin/env bash
# Shared helpers for the tpu/ scripts (sourced, not run). Every script accepts --dry-run: the
# commands are printed (one per line, shell-quoted) instead of being run.

set -euo pipefail

DRY_RUN=0
# This checkout's root (what tpu/install.sh archives and tpu/launch.sh checks --config against).
# shellcheck disable=SC2034  # read by the scripts that source this file
CHECKOUT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

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

# usage: the running script's help, its comment block under the shebang (up to the first code line).
usage() {
  sed -n '2,${/^#/!q;p;}' "$0"
}

# parse_options SPEC... -- ARGS...: read the script's command line. Each SPEC word names an option
# and the variable it sets: "--zone=ZONE" (takes a value), "--spot!SPOT" (a flag: sets 1),
# "--env+ENVS" (repeatable: appends to the array ENVS). --dry-run and -h/--help (which prints
# `usage`) are always accepted. A bare "--" ends the options; what follows is left in REST.
REST=()
parse_options() {
  local -A value=() flag=() append=()
  local spec
  while [[ $# -gt 0 && "$1" != "--" ]]; do
    spec=$1; shift
    case "${spec}" in
      *=*) value[${spec%%=*}]=${spec#*=} ;;
      *!*) flag[${spec%%!*}]=${spec#*!} ;;
      *+*) append[${spec%%+*}]=${spec#*+} ;;
    esac
  done
  shift
  while [[ $# -gt 0 ]]; do
    if [[ -n "${value[$1]+x}" ]]; then
      [[ $# -ge 2 ]] || die "option $1 needs a value"
      printf -v "${value[$1]}" '%s' "$2"; shift 2
    elif [[ -n "${flag[$1]+x}" ]]; then
      printf -v "${flag[$1]}" '%s' 1; shift
    elif [[ -n "${append[$1]+x}" ]]; then
      [[ $# -ge 2 ]] || die "option $1 needs a value"
      local -n list=${append[$1]}
      list+=("$2"); shift 2
    else
      case "$1" in
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; REST=("$@"); return ;;
        *) die "unknown option $1 (see --help)" ;;
      esac
    fi
  done
}

# need NAME VALUE: fail with a clear message when a required option is missing.
need() {
  [[ -n "$2" ]] || die "missing required option --$1 (see --help)"
}

# check_overrides WORD...: each training override is key=value (the train CLI's form), else die
# naming it: a worker would only say so in its log.
check_overrides() {
  local o
  for o in "$@"; do
    [[ "${o}" =~ ^[A-Za-z_][A-Za-z0-9_.]*= ]] || die "override ${o}: not key=value (e.g. train_batch_size=256)"
  done
}

# check_config CONFIG WORKDIR OVERRIDE...: the train CLI's --check-config on this machine (keys, types,
# ranges, relations; not paths, which exist on the workers), run from the checkout with $PYTHON
# (default python3); die when it refuses. Skipped with a warning where the package cannot be imported
# here or CONFIG is not a file here (a path on the workers).
check_config() {
  local config=$1 workdir=$2 python=${PYTHON:-python3}
  shift 2
  if [[ ! -f "${CHECKOUT}/${config}" && ! ( "${config}" == /* && -f "${config}" ) ]]; then
    echo "warning: --config ${config}: not a file here, so the config is checked only on the workers" >&2
  elif ! (cd "${CHECKOUT}" && "${python}" -c "import animatediff_jax.training.config" 2>/dev/null); then
    echo "warning: ${python} here cannot import animatediff_jax (pip install -e ${CHECKOUT}), so the config is checked only on the workers" >&2
  else
    (cd "${CHECKOUT}" && "${python}" -m animatediff_jax.train --check-config --config "${config}" \
      --workdir "${workdir}" "$@" >/dev/null) || die "the config above is refused; nothing launched"
  fi
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
