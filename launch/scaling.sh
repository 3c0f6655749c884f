#!/usr/bin/env bash
# Model-size scaling in miniature (the paper's score-vs-parameters figure): Scaled QL and BC on
# the embedded default's data at three widths of its small CPU ResNet, with its steps, batch and
# evaluation (local.gin, local_bc.gin), each size a gin file stating its parameter count:
#   narrow   models/small_narrow.gin   142,852 parameters (every width, F and D halved)
#   small    local.gin's own small.gin 412,788 (the embedded default: launch/local.sh's runs
#                                      WORKDIR/scaled_ql and WORKDIR/bc, reused)
#   wide     models/small_wide.gin     1,534,804 (every width, F and D doubled): 10.7x narrow
# Runs: WORKDIR/{scaled_ql,bc}[_SIZE][_seedS] (the small size keeps local.sh's names).
# Then `python -m scaled_ql.report` (scaling.png and scaling.csv: IQM against parameters per
# method with intervals and the fitted power law's exponent with its interval) and the per-game
# table of `report.compare`, a column per method and size, into WORKDIR/report/scaling.
# Confirmatory family (declared here, before any result): Scaled QL at the largest size vs at
# the smallest (does it scale?), and vs BC at the largest size; each game and the IQM.
#
# Cost on 2 cores (estimated from the measured 16 minutes of the small Scaled QL run and 13 of
# BC's, alone, and the sizes' step times beside small's): per seed about 20 minutes for
# narrow, 29 for small, 72 for wide; about 6 hours for 3 seeds, 5.6 after local.sh's seed 0.
# The small runs of seeds 1-2 are also the base runs of ablations.sh and data_quality.sh
# (trained once for all three).
#
#   SIZES="narrow small wide"  two or more of these (in any order)
#   SEEDS="0 1 2"              the seeds of every configuration (seed 0: the plain names)
# WORKDIR (workdirs/local), BINDINGS, SHARD_DIR, DATA_DIR, PROTOCOL and ARCHIVE: see
# launch/study.sh. With ARCHIVE set to a directory, `report.compare --archive` also keeps the
# runs' small files there, to commit (the same table can be made from the archive).
# Every run resumes: run it again after an interruption and it continues.
set -euo pipefail
STUDY=scaling
source "$(dirname "$0")/study.sh"
ORDER=(narrow small wide)  # by parameter count
SIZES=${SIZES:-narrow small wide}
for size in $SIZES; do
  [[ " ${ORDER[*]} " == *" $size "* ]] || fail "SIZES has '$size'; valid: ${ORDER[*]}"
done
sizes=()
for size in "${ORDER[@]}"; do
  [[ " $SIZES " == *[[:space:]]$size[[:space:]]* ]] && sizes+=("$size")
done
[ ${#sizes[@]} -ge 2 ] || fail "SIZES='$SIZES' names ${#sizes[@]} size; a scaling study needs 2" \
  "or more of: ${ORDER[*]}"

name_of() {  # name_of METHOD SIZE: the run's name (and its column in the table)
  if [ "$2" = small ]; then echo "$1"; else echo "$1_$2"; fi
}

for seed in $SEEDS; do
  for size in "${sizes[@]}"; do
    model=()
    [ "$size" != small ] && model=("models/small_$size.gin")
    plan_run "$(name_of scaled_ql "$size")" "$seed" local.gin "${model[@]}"
    plan_run "$(name_of bc "$size")" "$seed" local_bc.gin "${model[@]}"
  done
done
train_plan

largest=${sizes[-1]} smallest=${sizes[0]}
sql_large=$(name_of scaled_ql "$largest")
report_plan "$sql_large:$(name_of scaled_ql "$smallest"),$sql_large:$(name_of bc "$largest")" \
  --columns=run_name
echo
echo "Scaling fit (IQM = a * params^b per method; the exponent's 95% interval resamples runs):"
cat "$REPORT/scaling.csv"
echo "Report: $REPORT (scaling.png, scaling.csv, per_game.md, scaling_results.md)"
