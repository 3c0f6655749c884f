#!/usr/bin/env bash
# The embedded default, end to end on this machine's CPU:
#   collect real ALE data in the DQN Replay format -> convert -> pretrain Scaled QL (and the
#   BC baseline on the same data) -> evaluate every game -> a per-game table.
# Every stage resumes: run it again after an interruption and it continues.
# WORKDIR (default workdirs/local) holds the data, the runs and the results.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2
PY=.venv/bin/python
WORKDIR=${WORKDIR:-workdirs/local}
# The games are local.gin's own `train.game_names`.
GAMES=$($PY -c "import gin; from scaled_ql import config; config.parse_gin(['local.gin'], []); \
print(','.join(gin.query_parameter('train.game_names')))")

echo "== 1/4 collecting DQN-Replay-format data from real ALE games: ${GAMES}"
$PY -m data_prep.collect --output_dir="$WORKDIR/replay" --games="$GAMES" --runs=1 \
  --num_checkpoints=1 --checkpoint_size=50000 --policy=random --num_envs=8

echo "== 2/4 converting to the random-access shard format"
$PY -m data_prep.convert --replay_dir="$WORKDIR/replay" --shard_dir="$WORKDIR/shards" \
  --games="$GAMES" --runs=1

for method in scaled_ql bc; do
  echo "== 3/4 pretraining: ${method}"
  gin_file=local.gin
  [ "$method" = bc ] && gin_file=local_bc.gin
  $PY -m scaled_ql.pretrain --workdir="$WORKDIR/$method" --gin_file="$gin_file" \
    --gin_bindings="data.ReplayDataset.shard_dir = '$WORKDIR/shards'"
done

echo "== 4/4 results (evaluation: DQN Replay protocol, sticky actions, epsilon 0.001)"
$PY -m scaled_ql.report --runs="$WORKDIR/scaled_ql,$WORKDIR/bc" --output="$WORKDIR/report" \
  --task_bootstrap --verbosity=-1 >/dev/null
$PY -m scaled_ql.compare --runs="$WORKDIR/scaled_ql,$WORKDIR/bc" --data_dir="$WORKDIR/replay" \
  --output="$WORKDIR/report/local_results.md"
echo
echo "Checkpoints: $WORKDIR/{scaled_ql,bc}/checkpoints   Logs: $WORKDIR/*/metrics.jsonl"
echo "TensorBoard: .venv/bin/tensorboard --logdir $WORKDIR   Report: $WORKDIR/report"
