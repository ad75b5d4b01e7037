#!/usr/bin/env bash
# Copy this checkout to every worker of a TPU VM and install it with JAX for TPU.
#   tpu/install.sh --name adiff --zone us-east5-a [--project P] [--extras data,gcs] [--dry-run]
# The code travels as a `git archive` of HEAD (commit first); it is unpacked to ~/animatediff_jax.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

NAME="" ZONE="" PROJECT="" EXTRAS="data,gcs"  # gcs: the gs:// workdir tpu/launch.sh expects
parse_options --name=NAME --zone=ZONE --project=PROJECT --extras=EXTRAS -- "$@"
need name "${NAME}"; need zone "${ZONE}"

[[ -z "$(git -C "${CHECKOUT}" status --porcelain --untracked-files=no)" ]] \
  || echo "warning: ${CHECKOUT} has uncommitted changes; the workers get HEAD without them (commit first)" >&2
ARCHIVE_DIR=$(mktemp -d)
trap 'rm -rf "${ARCHIVE_DIR}"' EXIT
ARCHIVE="${ARCHIVE_DIR}/animatediff_jax.tar.gz"
run git -C "${CHECKOUT}" archive --format=tar.gz --output="${ARCHIVE}" HEAD

scp_args=(gcloud compute tpus tpu-vm scp "${ARCHIVE}" "${NAME}:~/animatediff_jax.tar.gz" --zone="${ZONE}" --worker=all)
if [[ -n "${PROJECT}" ]]; then scp_args+=(--project="${PROJECT}"); fi
run "${scp_args[@]}"

tpu_ssh "${NAME}" "${ZONE}" "${PROJECT}" \
  "rm -rf ~/animatediff_jax && mkdir -p ~/animatediff_jax ~/logs && tar -xzf ~/animatediff_jax.tar.gz -C ~/animatediff_jax && pip install -U 'jax[tpu]' && pip install -e \"\$HOME/animatediff_jax[${EXTRAS}]\""
