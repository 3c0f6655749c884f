#!/usr/bin/env bash
# Offline transfer in miniature (the paper's offline fine-tuning on unseen games): does the
# embedded default's pretrained Scaled QL network fine-tune better on an unseen game than the
# same network from scratch, with the same data and budget?
#   1-3  the unseen game's data, made as launch/local.sh makes the embedded default's:
#        checkpoint 0 uniform-random play, a behaviour agent trained on it (local_behaviour.gin),
#        checkpoints 1-2 its epsilon-greedy play (epsilon ~0.55, then 0.1); ROWS rows each
#   4    launch/finetune.sh, offline only, on a slice of it (gin/local_finetune_transfer.gin:
#        the first 10% of each checkpoint): pretrained (INIT_FROM) vs scratch (INIT_FROM's
#        network), each seed of SEEDS; its learning curves and fine-tuning table
# Then the per-game table of `report.compare` (columns pretrained and scratch, paired by seed)
# into WORKDIR/report/transfer.
# Confirmatory family (declared here, before any result): pretrained vs scratch on the game
# (one comparison).
#
# Cost on 2 cores (estimated from launch/local.sh's and launch/finetune.sh's measured stages:
# about 5 minutes for one game's data, its behaviour agent included, and 3-6 minutes per
# fine-tuning run): about 30 minutes for 3 seeds.
#
#   GAME=SpaceInvaders          the unseen game (not one of INIT_FROM's games; the paper's
#                               held-out five: Alien MsPacman Pong SpaceInvaders StarGunner)
#   INIT_FROM=WORKDIR/scaled_ql the pretrained run (launch/local.sh's Scaled QL run)
#   TRANSFER_DIR=WORKDIR/transfer/GAME   the game's data (replay, shards), its behaviour agent
#                               and the fine-tuning runs (offline/GAME/{pretrained,scratch}_seedS)
#   ROWS=50000                  rows of each of the game's 3 checkpoints (local.sh's)
#   SEEDS="0 1 2"               the seeds of pretrained and scratch alike
# WORKDIR (workdirs/local), BINDINGS (also the behaviour agent's), PROTOCOL and ARCHIVE: see
# launch/study.sh. With ARCHIVE set to a directory, `report.compare --archive` also keeps the
# runs' small files there, to commit (the same table can be made from the archive).
# Every stage resumes: run it again after an interruption and it continues. A run directory
# holding another configuration is refused by the trainer when its turn comes.
set -euo pipefail
STUDY=transfer
source "$(dirname "$0")/study.sh"
GAME=${GAME:-SpaceInvaders}
INIT_FROM=${INIT_FROM:-$WORKDIR/scaled_ql}
TRANSFER_DIR=${TRANSFER_DIR:-$WORKDIR/transfer/$GAME}
ROWS=${ROWS:-50000}
[[ $GAME =~ ^[A-Za-z]+$ ]] || fail "GAME='$GAME' is not a game name (e.g. GAME=SpaceInvaders)"
[[ $ROWS =~ ^[1-9][0-9]*$ ]] || fail "ROWS='$ROWS' is not a number of rows (e.g. ROWS=50000)"
[ -e "$INIT_FROM/run_info.json" ] || fail "INIT_FROM=$INIT_FROM is not a training run: run" \
  "\`bash launch/local.sh\` first, or set INIT_FROM to a run directory"
$PY - "$GAME" "$INIT_FROM" <<'EOF' || exit 2
import json, sys
from scaled_ql import games
game, init_from = sys.argv[1:]
try:
  games.validate_games([game])
except ValueError as e:
  sys.exit(f"error: GAME: {e}")
with open(f"{init_from}/run_info.json") as f:
  seen = json.load(f)["game_names"]
if game in seen:
  sys.exit(f"error: GAME={game} is one of the games {init_from} trained on ({', '.join(seen)}); "
           "transfer is to an unseen game, e.g. GAME=SpaceInvaders")
EOF

source launch/data_stages.sh  # collect_checkpoints, train_behaviour
echo "== transfer 1/4: collecting checkpoint 0 of $GAME: uniform-random play"
collect_checkpoints "$TRANSFER_DIR" "$GAME" "$ROWS" 1 --policy=random
echo "== transfer 2/4: training $GAME's behaviour agent on checkpoint 0"
train_behaviour "$TRANSFER_DIR" "$GAME" "${extra[@]}"
echo "== transfer 3/4: collecting checkpoints 1-2: the behaviour agent, epsilon 0.55 then 0.1"
collect_checkpoints "$TRANSFER_DIR" "$GAME" "$ROWS" 3 --policy=schedule \
  --policy_workdir="$TRANSFER_DIR/behaviour" --epsilon_start=1.0 --epsilon_end=0.1
echo "== transfer 4/4: fine-tuning on $GAME, pretrained ($INIT_FROM) vs scratch"
WORKDIR=$TRANSFER_DIR INIT_FROM=$INIT_FROM ONLINE="" OFFLINE=$GAME \
  SHARD_DIR=$TRANSFER_DIR/shards GIN_OFFLINE=local_finetune_transfer.gin SEEDS=$SEEDS \
  PROTOCOL=$PROTOCOL bash launch/finetune.sh

for seed in $SEEDS; do
  for init in pretrained scratch; do
    RUNS+=("$TRANSFER_DIR/offline/$GAME/${init}_seed$seed")  # launch/finetune.sh's names
  done
done
DATA_DIR=$TRANSFER_DIR/replay  # The game's data: its average and best checkpoint as columns.
compare_plan "pretrained:scratch" --columns=run_name
echo "Learning curves: $TRANSFER_DIR/report/finetune_curves.png  Table: $REPORT/transfer_results.md"
