# Sourced by local.sh and transfer.sh: the embedded default's way of making a game's data, in
# three stages, each resumable. DIR receives replay/ (the DQN Replay logs), shards/ (converted)
# and behaviour/ (the behaviour agent's run). The sourcing script sets PY.
#   collect_checkpoints DIR GAMES ROWS NUM_CHECKPOINTS [collect flags...]
#       checkpoints 0..NUM_CHECKPOINTS-1 of ROWS rows per game (those collected are kept), then
#       converted to shards
#   train_behaviour DIR GAMES [pretrain flags...]
#       the behaviour agent (local_behaviour.gin: tiny network, C51 + CQL) on what DIR holds
# local.sh's stages: collect_checkpoints ... 1 --policy=random; train_behaviour; then
# collect_checkpoints ... 3 --policy=schedule --policy_workdir=DIR/behaviour --epsilon_start=1.0
# --epsilon_end=0.1 (epsilon about 0.55 in checkpoint 1 and 0.1 in checkpoint 2).

collect_checkpoints() {
  local dir=$1 games=$2 rows=$3 num_checkpoints=$4
  shift 4
  $PY -m data_prep.collect --output_dir="$dir/replay" --games="$games" --runs=1 \
    --checkpoint_size="$rows" --num_envs=8 --num_checkpoints="$num_checkpoints" "$@"
  $PY -m data_prep.convert --replay_dir="$dir/replay" --shard_dir="$dir/shards" \
    --games="$games" --runs=1
}

train_behaviour() {
  local dir=$1 names
  names=$(sed "s/[^,]*/'&'/g; s/,/, /g" <<<"$2")  # A,B -> 'A', 'B'
  shift 2
  $PY -m scaled_ql.pretrain --workdir="$dir/behaviour" --gin_file=local_behaviour.gin \
    --gin_bindings="data.ReplayDataset.shard_dir = '$dir/shards'" \
    --gin_bindings="train.game_names = [$names]" "$@"
}
