#!/usr/bin/env bash
# The paper's design ablations in miniature: the embedded default's Scaled QL (the base arm:
# WORKDIR/scaled_ql and WORKDIR/scaled_ql_seedS, launch/local.sh's runs, reused) beside arms
# that each change one thing, every arm a gin file in gin/local_ablations/ (local.gin plus the
# binding it shares with the paper-scale gin/ablations/ file), with its own method name:
#   no_cql                 CQL alpha 0 (plain offline C51)
#   mse                    scalar Q and an MSE TD loss, not C51
#   no_feature_norm        no normalization of the representation
#   no_spatial_embedding   global mean pooling instead of the learned spatial embedding
#   cql_alpha_0_01, cql_alpha_0_5, cql_alpha_1_0   (optional) CQL alpha points around local's 0.1
# Runs: WORKDIR/scaled_ql_ARM[_seedS], their method named scaled_ql_ARM. Then `python -m
# scaled_ql.report` and the per-game table of `report.compare` (each arm a column, intervals
# over seeds) into WORKDIR/report/ablations.
# Confirmatory family (declared here, before any result): the base vs each arm of ARMS, on
# each game and the IQM.
#
# Cost on 2 cores (estimated from the measured 16 minutes of the base run alone: each arm
# trains the same network for the same 25k steps): about 16 minutes per arm and seed, 3.2
# hours for the 4 default arms x 3 seeds, plus 32 minutes for the base's seeds 1-2 unless
# local.sh, scaling.sh or data_quality.sh trained them.
#
#   ARMS="no_cql mse no_feature_norm no_spatial_embedding"   gin/local_ablations/ARM.gin each
#   SEEDS="0 1 2"              the seeds of every configuration (seed 0: the plain names)
# WORKDIR (workdirs/local), BINDINGS, SHARD_DIR, DATA_DIR, PROTOCOL and ARCHIVE: see
# launch/study.sh. With ARCHIVE set to a directory, `report.compare --archive` also keeps the
# runs' small files there, to commit (the same table can be made from the archive).
# Every run resumes: run it again after an interruption and it continues.
set -euo pipefail
STUDY=ablations
source "$(dirname "$0")/study.sh"
ARMS=${ARMS:-no_cql mse no_feature_norm no_spatial_embedding}
ARMS=$(tr -s '[:space:]' '\n' <<<"$ARMS" | awk 'NF && !seen[$0]++' | paste -sd' ' -)
valid=$(cd gin/local_ablations && ls ./*.gin | sed 's|^\./||; s|\.gin$||' | paste -sd' ' -)
for arm in $ARMS; do
  [ -f "gin/local_ablations/$arm.gin" ] || fail "ARMS has '$arm'; valid: $valid"
done
[ -n "${ARMS//[[:space:]]/}" ] || fail "ARMS is empty; valid: $valid"

family=()
for seed in $SEEDS; do
  plan_run scaled_ql "$seed" local.gin
  for arm in $ARMS; do
    plan_run "scaled_ql_$arm" "$seed" "local_ablations/$arm.gin"
  done
done
for arm in $ARMS; do
  family+=("scaled_ql:scaled_ql_$arm")
done
train_plan
report_plan "$(IFS=,; echo "${family[*]}")"
echo "Report: $REPORT (iqm_ci.png, per_game.md, ablations_results.md)"
