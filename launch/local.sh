#!/usr/bin/env bash
# The embedded default, end to end on this machine's CPU:
#   collect real ALE data in the DQN Replay format with a schedule of behaviour quality
#   (uniform-random play, then a behaviour agent trained on it, at falling epsilon) -> convert
#   -> pretrain Scaled QL (and the BC baseline on the same data) -> evaluate every game -> a
#   per-game table. About 36 minutes on 2 cores (measured alone).
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

collect() {  # collect NUM_CHECKPOINTS [flags...]: checkpoints of 50k rows per game, resumable.
  local num_checkpoints=$1
  shift
  $PY -m data_prep.collect --output_dir="$WORKDIR/replay" --games="$GAMES" --runs=1 \
    --checkpoint_size=50000 --num_envs=8 --num_checkpoints="$num_checkpoints" "$@"
  $PY -m data_prep.convert --replay_dir="$WORKDIR/replay" --shard_dir="$WORKDIR/shards" \
    --games="$GAMES" --runs=1
}

echo "== 1/5 collecting checkpoint 0: uniform-random play in real ALE games: ${GAMES}"
collect 1 --policy=random

echo "== 2/5 training the behaviour agent on checkpoint 0 (tiny network, C51 + CQL)"
$PY -m scaled_ql.pretrain --workdir="$WORKDIR/behaviour" --gin_file=local_behaviour.gin \
  --gin_bindings="$SHARDS"

echo "== 3/5 collecting checkpoints 1-2: the behaviour agent, epsilon-greedy, epsilon 0.55 then 0.1"
collect 3 --policy=schedule --policy_workdir="$WORKDIR/behaviour" --epsilon_start=1.0 \
  --epsilon_end=0.1

runs=()
for seed in $SEEDS; do
  suffix=""
  [ "$seed" != 0 ] && suffix="_seed$seed"  # seed 0 keeps the plain names (finetune.sh's default)
  for method in scaled_ql bc; do
    echo "== 4/5 pretraining on all three checkpoints: ${method}, seed ${seed}"
    gin_file=local.gin
    [ "$method" = bc ] && gin_file=local_bc.gin
    $PY -m scaled_ql.pretrain --workdir="$WORKDIR/$method$suffix" --gin_file="$gin_file" \
      --gin_bindings="$SHARDS" --gin_bindings="train.seed = $seed"
    runs+=("$WORKDIR/$method$suffix")
  done
done

echo "== 5/5 results (evaluation: DQN Replay protocol, sticky actions, epsilon 0.001)"
list=$(IFS=,; echo "${runs[*]}")
$PY -m scaled_ql.report --runs="$list" --output="$WORKDIR/report" \
  --task_bootstrap --verbosity=-1 >/dev/null
$PY -m scaled_ql.report.compare --runs="$list" \
  --data_dir="$WORKDIR/replay" --output="$WORKDIR/report/local_results.md"
echo
echo "Checkpoints: $WORKDIR/{scaled_ql,bc,behaviour}/checkpoints   Logs: $WORKDIR/*/metrics.jsonl"
echo "TensorBoard: .venv/bin/tensorboard --logdir $WORKDIR   Report: $WORKDIR/report"
