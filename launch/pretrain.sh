#!/usr/bin/env bash
# Pretrains Scaled QL on a Cloud TPU pod: every host clones the repo, sets up, and runs
# `python -m scaled_ql.pretrain --distributed` (jax.distributed finds the pod's hosts).
#
#   REPO=<clone URL> TPU_NAME=my-v3-128 ZONE=europe-west4-a WORKDIR=/mnt/runs/sql \
#   SHARD_DIR=/data/dqn_replay_shards bash launch/pretrain.sh pretrain_near_optimal.gin [BINDING...]
#
# Each host reads its own share of the data (data.ReplayDataset shards by process index):
# SHARD_DIR must hold the converted shards on every host (a shared disk or a copy each).
# WORKDIR must be one shared filesystem path mounted on every host (e.g. a gcsfuse mount of
# a bucket): checkpoints are written by all hosts together, logs by host 0.
# DRY_RUN=1 prints the command instead of running it.
set -euo pipefail

GIN_FILE=${1:?usage: launch/pretrain.sh GIN_FILE [GIN_BINDING...]}
shift
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${WORKDIR:?set WORKDIR}" "${SHARD_DIR:?set SHARD_DIR}"
: "${REPO:?set REPO to the URL of this repository (each host clones it)}"

bindings=(--gin_bindings="data.ReplayDataset.shard_dir = '${SHARD_DIR}'")
for b in "$@"; do bindings+=(--gin_bindings="$b"); done

remote="set -e; [ -d scaled_ql ] || git clone ${REPO} scaled_ql; cd scaled_ql && git pull --ff-only \
&& EXTRAS=tpu bash launch/setup.sh && .venv/bin/python -m scaled_ql.pretrain --distributed \
--workdir=${WORKDIR} --gin_file=${GIN_FILE} $(printf '%q ' "${bindings[@]}")"

cmd=(gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "$remote")
if [ "${DRY_RUN:-0}" = 1 ]; then
  printf '%q ' "${cmd[@]}"; echo
else
  "${cmd[@]}"
fi
