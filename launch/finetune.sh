#!/usr/bin/env bash
# Fine-tuning, pretrained vs from scratch (the same network and budget), over seeds, then the
# fine-tuning tables and learning curves. By default: the embedded default's run (`bash
# launch/local.sh` first), online on Breakout variant 1 and offline on SpaceInvaders (unseen),
# 3 seeds each: 12 runs of 3-6 minutes (the evaluation's share varies), 41 minutes in all
# on 2 cores.
#
#   ONLINE="Breakout:1"          GAME:VARIANT pairs fine-tuned online (the paper's: Freeway,
#                                Hero and Breakout variants)
#   OFFLINE="SpaceInvaders"      unseen games fine-tuned offline (the paper's held-out five:
#                                Alien MsPacman Pong SpaceInvaders StarGunner)
#   SEEDS="0 1 2"
#   INIT_FROM=workdirs/local/scaled_ql   the pretrained run (or RUN/checkpoints/STEP)
#   SHARD_DIR=                   converted DQN Replay data of the OFFLINE games; unset: a
#                                uniform-random checkpoint of each is collected and converted
#                                into WORKDIR/data (the miniature has no DQN agent for them)
#   WORKDIR=workdirs/finetune    the runs (WORKDIR/{online,offline}/GAME[_vK]/INIT_seedS), data
#                                and report (WORKDIR/report)
#   GIN_ONLINE=, GIN_OFFLINE=    gin files of the two modes; default: chosen by
#                                `scaled_ql.finetune` from the model (a CPU model's miniature
#                                budgets, gin/local_finetune_*.gin, or the paper's)
#   ROWS=50000                   rows of each collected checkpoint (without SHARD_DIR)
#   PROTOCOL=dqn                 the evaluations the report reads (custom: a gin-set protocol)
#   BINDINGS=                    extra gin bindings for every run, ';'-separated (tests shrink
#                                runs; launch/transfer.sh passes its own through)
# Every run resumes: run it again after an interruption and it continues.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2
PY=.venv/bin/python
WORKDIR=${WORKDIR:-workdirs/finetune}
INIT_FROM=${INIT_FROM:-workdirs/local/scaled_ql}
ONLINE=${ONLINE-Breakout:1}
OFFLINE=${OFFLINE-SpaceInvaders}
SEEDS=${SEEDS:-0 1 2}
if [ ! -e "$INIT_FROM/run_info.json" ] && [ ! -e "$INIT_FROM/../../run_info.json" ]; then
  echo "error: INIT_FROM=$INIT_FROM is not a training run; run \`bash launch/local.sh\` first or" \
    "set INIT_FROM to a run directory" >&2
  exit 2
fi
extra=()
IFS=';' read -ra bindings <<<"${BINDINGS:-}"
for binding in "${bindings[@]}"; do
  [ -n "$binding" ] && extra+=(--gin_bindings="$binding")
done

if [ -n "$OFFLINE" ] && [ -z "${SHARD_DIR:-}" ]; then
  SHARD_DIR=$WORKDIR/data/shards
  echo "== collecting a uniform-random checkpoint (${ROWS:-50000} rows) of: ${OFFLINE}"
  games=${OFFLINE// /,}
  $PY -m data_prep.collect --output_dir="$WORKDIR/data/replay" --games="$games" --runs=1 \
    --checkpoint_size="${ROWS:-50000}" --num_envs=8 --num_checkpoints=1 --policy=random
  $PY -m data_prep.convert --replay_dir="$WORKDIR/data/replay" --shard_dir="$SHARD_DIR" \
    --games="$games" --runs=1
fi

run() {  # run MODE NAME INIT SEED [flags...]
  local mode=$1 name=$2 init=$3 seed=$4 gin=()
  shift 4
  [ "$mode" = online ] && [ -n "${GIN_ONLINE:-}" ] && gin=(--gin_file="$GIN_ONLINE")
  [ "$mode" = offline ] && [ -n "${GIN_OFFLINE:-}" ] && gin=(--gin_file="$GIN_OFFLINE")
  local from=(--init_from="$INIT_FROM") label=pretrained
  # From scratch: the same network as the pretrained run's (from its run_info.json).
  [ "$init" = scratch ] && from=(--init_from=none --network_from="$INIT_FROM") && label=scratch
  echo "== $mode fine-tuning: $name, $label, seed $seed"
  $PY -m scaled_ql.finetune --mode="$mode" "${from[@]}" --seed="$seed" \
    --workdir="$WORKDIR/$mode/$name/${label}_seed$seed" "${gin[@]}" "$@" "${extra[@]}"
}

for seed in $SEEDS; do
  for pair in $ONLINE; do
    for init in pretrained scratch; do
      run online "${pair%%:*}_v${pair##*:}" "$init" "$seed" --game="${pair%%:*}" \
        --variant="${pair##*:}"
    done
  done
  for game in $OFFLINE; do
    for init in pretrained scratch; do
      run offline "$game" "$init" "$seed" --game="$game" \
        --gin_bindings="data.ReplayDataset.shard_dir = '$SHARD_DIR'"
    done
  done
done

runs=$(ls -d "$WORKDIR"/online/* "$WORKDIR"/offline/* 2>/dev/null | paste -sd, - || true)
if [ -z "$runs" ]; then
  echo "error: no runs in $WORKDIR/online or $WORKDIR/offline (ONLINE and OFFLINE are empty)" >&2
  exit 2
fi
$PY -m scaled_ql.report --runs="$runs" --output="$WORKDIR/report" --protocol="${PROTOCOL:-dqn}" \
  --verbosity=-1 >/dev/null
for table in finetune_online finetune_offline; do
  [ "$(wc -l <"$WORKDIR/report/$table.md")" -gt 2 ] || continue  # a header only: no such runs
  echo
  echo "$table (return on real ALE, protocol ${PROTOCOL:-dqn}; mean ± sd over seeds):"
  cat "$WORKDIR/report/$table.md"
done
# Frames of the first seed's agents on each variant, from their last evaluation's video.
first_seed=${SEEDS%% *}
for pair in $ONLINE; do
  name="${pair%%:*}_v${pair##*:}"
  videos=()
  for label in pretrained scratch; do
    video=$(ls "$WORKDIR/online/$name/${label}_seed$first_seed"/videos/step_*/*.mp4 \
      2>/dev/null | tail -1 || true)
    [ -n "$video" ] && videos+=("$label=$video")
  done
  if [ ${#videos[@]} -gt 0 ]; then  # Evaluations write videos where gin says so (the miniature).
    $PY -m scaled_ql.video --videos="$(IFS=,; echo "${videos[*]}")" \
      --output="$WORKDIR/report/frames_$name.png"
  fi
done
echo
echo "Learning curves: $WORKDIR/report/finetune_curves.png   Runs: $WORKDIR/{online,offline}"
echo "Report: $WORKDIR/report/report.md   Frames (when videos were written): $WORKDIR/report/frames_*.png"
