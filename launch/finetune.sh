#!/usr/bin/env bash
# Fine-tuning, pretrained vs from scratch (the same network and budget), over seeds, then the
# fine-tuning tables and learning curves. By default: the embedded default's run (`bash
# launch/local.sh` first), online on Breakout variant 1 and offline on SpaceInvaders (unseen),
# 3 seeds each: 12 runs of about 4 minutes on 2 cores.
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
#   GIN_FILE=                    default: chosen by `scaled_ql.finetune` from the model
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
[ -n "${GIN_FILE:-}" ] && extra+=(--gin_file="$GIN_FILE")

if [ -n "$OFFLINE" ] && [ -z "${SHARD_DIR:-}" ]; then
  SHARD_DIR=$WORKDIR/data/shards
  echo "== collecting a uniform-random checkpoint (50k rows) of: ${OFFLINE}"
  games=${OFFLINE// /,}
  $PY -m data_prep.collect --output_dir="$WORKDIR/data/replay" --games="$games" --runs=1 \
    --checkpoint_size=50000 --num_envs=8 --num_checkpoints=1 --policy=random
  $PY -m data_prep.convert --replay_dir="$WORKDIR/data/replay" --shard_dir="$SHARD_DIR" \
    --games="$games" --runs=1
fi

run() {  # run MODE NAME INIT SEED [flags...]
  local mode=$1 name=$2 init=$3 seed=$4
  shift 4
  local from=(--init_from="$INIT_FROM") label=pretrained
  # From scratch: the same network as the pretrained run's (from its run_info.json).
  [ "$init" = scratch ] && from=(--init_from=none --network_from="$INIT_FROM") && label=scratch
  echo "== $mode fine-tuning: $name, $label, seed $seed"
  $PY -m scaled_ql.finetune --mode="$mode" "${from[@]}" --seed="$seed" \
    --workdir="$WORKDIR/$mode/$name/${label}_seed$seed" "${extra[@]}" "$@"
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

runs=$(ls -d "$WORKDIR"/online/* "$WORKDIR"/offline/* 2>/dev/null | paste -sd, -)
$PY -m scaled_ql.report --runs="$runs" --output="$WORKDIR/report" --verbosity=-1 >/dev/null
for table in finetune_online finetune_offline; do
  echo
  echo "$table (return on real ALE, DQN Replay protocol; mean ± sd over seeds):"
  cat "$WORKDIR/report/$table.md"
done
echo
echo "Learning curves: $WORKDIR/report/finetune_curves.png   Runs: $WORKDIR/{online,offline}"
echo "Videos of the online agents: $WORKDIR/online/*/*/videos   Report: $WORKDIR/report/report.md"
