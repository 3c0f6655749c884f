#!/usr/bin/env bash
# Data quality in miniature (the paper's main table: low-quality vs near-optimal data): Scaled
# QL and BC on the embedded default's earliest data only against all of it, the same network,
# steps, batch and evaluation:
#   early   checkpoints 0-1 of 0-2 (random play, then the behaviour agent at epsilon ~0.55):
#           gin/local_early.gin and local_early_bc.gin, which say why these checkpoints
#   all     checkpoints 0-2: local.gin and local_bc.gin (launch/local.sh's runs, reused)
# Runs: WORKDIR/{scaled_ql,bc}_early[_seedS] beside WORKDIR/{scaled_ql,bc}[_seedS]. Then
# `python -m scaled_ql.report` and the per-game table of `report.compare` (a column per method
# and split) into WORKDIR/report/data_quality.
# Confirmatory family (declared here, before any result): Scaled QL vs BC on the early data,
# Scaled QL vs BC on all of it, and the change of that margin (Scaled QL's margin over BC on
# the early data against its margin on all: does it grow on the poorer data, as the paper's
# table says?); each game and the IQM.
# The table's data columns are all three checkpoints' scores (the early runs saw two of them).
#
# Cost on 2 cores (estimated from the measured 16 minutes of the Scaled QL run and 13 of BC's
# alone at 25k steps: the early runs train the same steps on fewer rows): about 29 minutes per
# seed for the early split, 1.5 hours for 3 seeds, plus 58 minutes for the all-data seeds 1-2
# unless local.sh, scaling.sh or ablations.sh trained them.
#
#   SEEDS="0 1 2"              the seeds of every configuration (seed 0: the plain names)
# WORKDIR (workdirs/local), BINDINGS, SHARD_DIR, DATA_DIR, PROTOCOL and ARCHIVE: see
# launch/study.sh. With ARCHIVE set to a directory, `report.compare --archive` also keeps the
# runs' small files there, to commit (the same table can be made from the archive).
# Every run resumes: run it again after an interruption and it continues.
set -euo pipefail
STUDY=data_quality
source "$(dirname "$0")/study.sh"

for seed in $SEEDS; do
  plan_run scaled_ql_early "$seed" local_early.gin
  plan_run bc_early "$seed" local_early_bc.gin
  plan_run scaled_ql "$seed" local.gin
  plan_run bc "$seed" local_bc.gin
done
train_plan
report_plan "scaled_ql_early:bc_early,scaled_ql:bc,scaled_ql_early-bc_early:scaled_ql-bc" \
  --columns=run_name
echo "Report: $REPORT (iqm_ci.png, per_game.md, data_quality_results.md)"
