#!/usr/bin/env bash
# Make a dataset in Cloud Storage visible on every worker: copy it to local disk, or mount it.
#   tpu/data.sh --name adiff --zone us-east5-a --src gs://bucket/tfds --dest /data/tfds [--mode copy|mount] [--dry-run]
# copy: `gcloud storage cp -r` (fastest reads; needs the disk). mount: gcsfuse (read in place).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

NAME="" ZONE="" PROJECT="" SRC="" DEST="" MODE="copy"
parse_options --name=NAME --zone=ZONE --project=PROJECT --src=SRC --dest=DEST --mode=MODE -- "$@"
need name "${NAME}"; need zone "${ZONE}"; need src "${SRC}"; need dest "${DEST}"
[[ "${SRC}" == gs://* ]] || die "--src must be a gs:// path, got ${SRC}"

case "${MODE}" in
  copy)
    tpu_ssh "${NAME}" "${ZONE}" "${PROJECT}" \
      "sudo mkdir -p ${DEST} && sudo chown \$USER ${DEST} && gcloud storage cp -r ${SRC%/}/* ${DEST}/" ;;
  mount)
    BUCKET=${SRC#gs://}; BUCKET=${BUCKET%%/*}
    PREFIX=${SRC#gs://"${BUCKET}"}; PREFIX=${PREFIX#/}
    ONLY_DIR=""
    if [[ -n "${PREFIX}" ]]; then ONLY_DIR="--only-dir ${PREFIX}"; fi
    tpu_ssh "${NAME}" "${ZONE}" "${PROJECT}" \
      "(command -v gcsfuse || (export GCSFUSE_REPO=gcsfuse-\$(lsb_release -c -s) && echo \"deb https://packages.cloud.google.com/apt \$GCSFUSE_REPO main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list && curl https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add - && sudo apt-get update && sudo apt-get install -y gcsfuse)) && sudo mkdir -p ${DEST} && sudo chown \$USER ${DEST} && gcsfuse --implicit-dirs ${ONLY_DIR} ${BUCKET} ${DEST}" ;;
  *) die "--mode must be copy or mount, got ${MODE}" ;;
esac
