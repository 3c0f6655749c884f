#!/usr/bin/env bash
# The baselines beside a Scaled QL run, with its games, data selection, network, batch and
# gradient steps (its operative_config.gin), then one table of every method:
#   bc            behaviour cloning (reused when WORKDIR/bc exists: launch/local.sh trains it)
#   sampled_bc    BC's policy drawing its action from its softmax (0 steps): what q_guided_bc
#                 plays with k = 1, so re-ranking and sampling can be told apart
#   filtered_bc   BC on the best episodes filling 10% of the rows (%BC; methods/filtered_bc.gin)
#   dt            the Multi-Game Decision Transformer (gin/methods/dt.gin + DT_MODEL), acting
#                 as MGDT's notebook does (sampled actions)
#   dt_argmax     the DT run's policy playing its argmax action, as BC and Scaled QL do (0 steps)
#   q_guided_bc   BC's sampled actions re-ranked by the Scaled QL run's Q (PA-RL; 0 steps)
#   q_guided_dt   the DT's sampled actions re-ranked likewise
# By default on the embedded default's run (`bash launch/local.sh` first): measured 72 minutes
# on 2 cores, 29 of them the DT's 25k steps at ~15 steps/s and 19 the Q-guided DT's evaluation
# (since then the DT's last block computes only its read-out tokens: the DT took 19 minutes
# instead of 31 when rerun alone, 24 steps/s).
#
#   SQL_RUN=workdirs/local/scaled_ql   the Scaled QL run (also the Q-guided policies' critic)
#   SEEDS=0                            with "0 1 2": seed S > 0 uses SQL_RUN_seedS (as
#                                      `SEEDS="0 1 2" bash launch/local.sh` names them) and
#                                      writes WORKDIR/METHOD_seedS
#   WORKDIR=<SQL_RUN's parent>         the runs (WORKDIR/METHOD) and WORKDIR/report
#   METHODS="bc sampled_bc filtered_bc dt dt_argmax q_guided_bc q_guided_dt" (in this order:
#                                      a 0-step method needs its trained one before it)
#   DT_MODEL=models/dt_cpu.gin         the DT's shape (models/dt_200m.gin: MGDT's largest)
#   BINDINGS=                          extra gin bindings for every run, ';'-separated
#   DATA_DIR=                          the raw DQN Replay logs, for the data's own scores in
#                                      the per-game table (default: WORKDIR/replay if present)
#   PROTOCOL=dqn                       the evaluations the report reads (custom: gin-set)
# Every run resumes: run it again after an interruption and it continues.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2
PY=.venv/bin/python
SQL_RUN=${SQL_RUN:-workdirs/local/scaled_ql}
SQL_RUN=${SQL_RUN%/}
WORKDIR=${WORKDIR:-$(dirname "$SQL_RUN")}
METHODS=${METHODS:-bc sampled_bc filtered_bc dt dt_argmax q_guided_bc q_guided_dt}
DT_MODEL=${DT_MODEL:-models/dt_cpu.gin}
DATA_DIR=${DATA_DIR:-$WORKDIR/replay}
SEEDS=${SEEDS:-0}
suffix_of() { [ "$1" = 0 ] || echo "_seed$1"; }  # seed 0 keeps the plain names
for seed in $SEEDS; do
  sql=$SQL_RUN$(suffix_of "$seed")
  if [ ! -e "$sql/operative_config.gin" ]; then
    echo "error: $sql is not a training run (no operative_config.gin); run" \
      "\`SEEDS=\"$SEEDS\" bash launch/local.sh\` first or set SQL_RUN to a Scaled QL run" >&2
    exit 2
  fi
done
for method in $METHODS; do
  case $method in bc | sampled_bc | filtered_bc | dt | dt_argmax | q_guided_bc | q_guided_dt) ;;
  *)
    echo "error: METHODS has '$method'; valid: bc sampled_bc filtered_bc dt dt_argmax" \
      "q_guided_bc q_guided_dt" >&2
    exit 2
    ;;
  esac
done
extra=()
IFS=';' read -ra bindings <<<"${BINDINGS:-}"
for binding in "${bindings[@]}"; do
  [ -n "$binding" ] && extra+=(--gin_bindings="$binding")
done

train() {  # train SQL_RUN WORKDIR_NAME METHOD [flags...]: the run's configuration + METHOD's
  local sql=$1 name=$2 method=$3
  shift 3
  echo "== $name"
  $PY -m scaled_ql.pretrain --workdir="$WORKDIR/$name" \
    --gin_file="$sql/operative_config.gin" --gin_file="methods/$method.gin" "$@" "${extra[@]}"
}

runs=()
for seed in $SEEDS; do
  suffix=$(suffix_of "$seed")
  sql=$SQL_RUN$suffix
  runs+=("$sql")
  for method in $METHODS; do
    case $method in
    dt) train "$sql" "dt$suffix" dt --gin_file="$DT_MODEL" ;;
    sampled_bc) train "$sql" "sampled_bc$suffix" sampled_bc \
      --gin_bindings="PROPOSAL = '$WORKDIR/bc$suffix'" ;;
    dt_argmax) train "$sql" "dt_argmax$suffix" dt_argmax --gin_file="$DT_MODEL" \
      --gin_bindings="PROPOSAL = '$WORKDIR/dt$suffix'" ;;
    q_guided_bc | q_guided_dt)
      model=()
      [ "$method" = q_guided_dt ] && model=(--gin_file="$DT_MODEL")
      train "$sql" "$method$suffix" "$method" "${model[@]}" \
        --gin_bindings="PROPOSAL = '$WORKDIR/${method#q_guided_}$suffix'" \
        --gin_bindings="CRITIC = '$sql'"
      ;;
    *) train "$sql" "$method$suffix" "$method" ;;
    esac
    runs+=("$WORKDIR/$method$suffix")
  done
done

echo "== results (evaluation: the Scaled QL run's protocol)"
list=$(IFS=,; echo "${runs[*]}")
$PY -m scaled_ql.report --runs="$list" --output="$WORKDIR/report" --task_bootstrap \
  --protocol="${PROTOCOL:-dqn}" --verbosity=-1 >/dev/null
data=()
[ -d "$DATA_DIR" ] && data=(--data_dir="$DATA_DIR")
$PY -m scaled_ql.report.compare --runs="$list" "${data[@]}" --protocol="${PROTOCOL:-dqn}" \
  --output="$WORKDIR/report/baselines_results.md"
echo "Report: $WORKDIR/report (main_table.md, per_game.md, iqm_ci.png)"
