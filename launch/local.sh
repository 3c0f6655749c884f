#!/usr/bin/env bash
# The embedded default, end to end on this machine's CPU:
#   collect real ALE data in the DQN Replay format with a schedule of behaviour quality
#   (uniform-random play, then a behaviour agent trained on it, at falling epsilon) -> convert
#   -> pretrain Scaled QL (and the BC baseline on the same data) -> evaluate every game -> a
#   per-game table. 36 minutes on the reference machine (2 vCPUs of an AMD EPYC, Zen 4,
#   AVX-512; measured alone); about 2.5 hours on a 2-core AVX2 machine (docs/benchmarks.md).
# At each stage it prints that stage's time and the time of the stages after it: on the
# reference machine, and on this one once a training stage has run a few hundred steps
# (launch/stage_times.py).
# Every stage resumes: run it again after an interruption and it continues.
# WORKDIR (default workdirs/local) holds the data, the runs and the results.
# SEEDS="0 1 2" trains Scaled QL and BC with each seed (about 29 minutes more per seed) on the
# same data; the table then gives intervals over seeds and episodes.
# Then `bash launch/baselines.sh` adds filtered BC, the DT and the Q-guided policies.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2
PY=.venv/bin/python
WORKDIR=${WORKDIR:-workdirs/local}
SEEDS=${SEEDS:-0}
if [ -e "$WORKDIR/scaled_ql" ] && [ ! -e "$WORKDIR/behaviour" ]; then
  echo "error: $WORKDIR was made by an earlier local.sh (uniform-random data only, no behaviour" \
    "agent); remove it or run with WORKDIR=<a new directory>" >&2
  exit 2
fi
# The games are local.gin's own `train.game_names`.
GAMES=$($PY -c "import gin; from scaled_ql import configurables; configurables.parse_gin(['local.gin'], []); \
print(','.join(gin.query_parameter('train.game_names')))")
SHARDS="data.ReplayDataset.shard_dir = '$WORKDIR/shards'"
NUM_SEEDS=$(wc -w <<< "$SEEDS")

# Times: each stage's on the reference machine and, scaled by the speed of the last training
# run timed here, on this one; a watcher beside each training stage prints its own estimate
# once it has measured a few hundred steps. An estimate never stops the pipeline.
measured=""
watcher=""
stage_times() {  # stage_times STAGE [SEED_INDEX]
  $PY launch/stage_times.py plan --stage="$1" --seed_index="${2:-0}" --num_seeds="$NUM_SEEDS" \
    ${measured:+--measured="$measured"} || true
}
watch_start() {  # watch_start STAGE SEED_INDEX RUN: the estimate from RUN's first windows.
  $PY launch/stage_times.py watch --stage="$1" --seed_index="$2" --num_seeds="$NUM_SEEDS" \
    --run="$3" &
  watcher=$!
}
watch_stop() {
  if [ -n "$watcher" ]; then
    { kill "$watcher"; wait "$watcher"; } 2>/dev/null || true
    watcher=""
  fi
}
trap '[ -z "$watcher" ] || kill "$watcher" 2>/dev/null || true' EXIT  # interrupted: no watcher left

source launch/data_stages.sh  # collect_checkpoints, train_behaviour

echo "== 1/5 collecting checkpoint 0: uniform-random play in real ALE games: ${GAMES}"
stage_times collect_random
collect_checkpoints "$WORKDIR" "$GAMES" 50000 1 --policy=random

echo "== 2/5 training the behaviour agent on checkpoint 0 (tiny network, C51 + CQL)"
stage_times behaviour
watch_start behaviour 0 "$WORKDIR/behaviour"
train_behaviour "$WORKDIR" "$GAMES"
watch_stop
measured="$WORKDIR/behaviour"

echo "== 3/5 collecting checkpoints 1-2: the behaviour agent, epsilon-greedy, epsilon 0.55 then 0.1"
stage_times collect_agent
collect_checkpoints "$WORKDIR" "$GAMES" 50000 3 --policy=schedule \
  --policy_workdir="$WORKDIR/behaviour" --epsilon_start=1.0 --epsilon_end=0.1

runs=()
seed_index=0
for seed in $SEEDS; do
  suffix=""
  [ "$seed" != 0 ] && suffix="_seed$seed"  # seed 0 keeps the plain names (finetune.sh's default)
  for method in scaled_ql bc; do
    echo "== 4/5 pretraining on all three checkpoints: ${method}, seed ${seed}"
    gin_file=local.gin
    [ "$method" = bc ] && gin_file=local_bc.gin
    stage_times "$method" "$seed_index"
    watch_start "$method" "$seed_index" "$WORKDIR/$method$suffix"
    $PY -m scaled_ql.pretrain --workdir="$WORKDIR/$method$suffix" --gin_file="$gin_file" \
      --gin_bindings="$SHARDS" --gin_bindings="train.seed = $seed"
    watch_stop
    measured="$WORKDIR/$method$suffix"
    runs+=("$WORKDIR/$method$suffix")
  done
  seed_index=$((seed_index + 1))
done

echo "== 5/5 results (evaluation: DQN Replay protocol, sticky actions, epsilon 0.001)"
stage_times report
list=$(IFS=,; echo "${runs[*]}")
$PY -m scaled_ql.report --runs="$list" --output="$WORKDIR/report" \
  --task_bootstrap --verbosity=-1 >/dev/null
$PY -m scaled_ql.report.compare --runs="$list" \
  --data_dir="$WORKDIR/replay" --output="$WORKDIR/report/local_results.md"
echo
echo "Checkpoints: $WORKDIR/{scaled_ql,bc,behaviour}/checkpoints   Logs: $WORKDIR/*/metrics.jsonl"
echo "TensorBoard: .venv/bin/tensorboard --logdir $WORKDIR   Report: $WORKDIR/report"
