# Sourced by the studies' launchers (scaling.sh, ablations.sh, data_quality.sh): their shared
# set-up and checks, the plan of runs (checked whole by `python -m scaled_ql.check_runs` before
# any run trains), the training loop and the report. The launcher sets STUDY (its name) first.
# Its environment (each launcher's header lists these too):
#   WORKDIR=workdirs/local   the embedded default's directory (`bash launch/local.sh` first):
#                            its data, its runs, and the studies' runs beside them
#   SEEDS="0 1 2"            seed S > 0 writes RUN_seedS; seed 0 keeps the plain names, so the
#                            runs of local.sh, baselines.sh and finetune.sh are found and reused
#   BINDINGS=                extra gin bindings for every run, ';'-separated (tests shrink runs)
#   SHARD_DIR=WORKDIR/shards, DATA_DIR=WORKDIR/replay   the converted data, and the raw logs
#                            whose episode scores form the data's columns in the table
#   PROTOCOL=dqn             the evaluations the report reads (custom: a gin-set protocol)
#   ARCHIVE=                 a directory: also keep the runs' small files there, to commit
#                            (`report.compare --archive`; the same table can be made from it)
# Every run resumes: run the launcher again after an interruption and it continues; finished
# runs are reused.
set -euo pipefail
: "${STUDY:?is unset: launch/study.sh is sourced by scaling.sh, ablations.sh, data_quality.sh}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash launch/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2
PY=.venv/bin/python
WORKDIR=${WORKDIR:-workdirs/local}
WORKDIR=${WORKDIR%/}
SHARD_DIR=${SHARD_DIR:-$WORKDIR/shards}
DATA_DIR=${DATA_DIR:-$WORKDIR/replay}
SEEDS=${SEEDS:-0 1 2}
PROTOCOL=${PROTOCOL:-dqn}
REPORT=$WORKDIR/report/$STUDY

fail() {  # One line on stderr, exit status 2 (as the Python entry points' `error: ...`).
  echo "error: $*" >&2
  exit 2
}

# -- Checks of the environment, before anything runs.
for seed in $SEEDS; do
  [[ $seed =~ ^[0-9]+$ ]] || fail "SEEDS has '$seed'; seeds are integers >= 0, e.g. SEEDS=\"0 1 2\""
done
[ -n "${SEEDS//[[:space:]]/}" ] || fail "SEEDS is empty; e.g. SEEDS=\"0 1 2\""
repeated=$(tr -s '[:space:]' '\n' <<<"$SEEDS" | sed '/^$/d' | sort | uniq -d | paste -sd' ' -)
[ -z "$repeated" ] || fail "SEEDS repeats $repeated; each seed is one run of each configuration"
[ -d "$SHARD_DIR" ] || fail "$SHARD_DIR holds no converted data: run \`bash launch/local.sh\`" \
  "first (it makes WORKDIR=$WORKDIR), or set WORKDIR (or SHARD_DIR) to its directory"
extra=()
IFS=';' read -ra bindings <<<"${BINDINGS:-}"
for binding in "${bindings[@]}"; do
  [ -n "$binding" ] && extra+=(--gin_bindings="$binding")
done

suffix_of() { [ "$1" = 0 ] || echo "_seed$1"; }  # seed 0 keeps the plain names

# -- The plan: one `scaled_ql.pretrain` per line, its arguments tab-separated.
PLAN=$(mktemp)
trap 'rm -f "$PLAN"' EXIT
RUNS=()  # the planned run directories, in order

plan_run() {  # plan_run NAME SEED GIN_FILE...: WORKDIR/NAME (or NAME_seedS) with these files
  local workdir=$WORKDIR/$1$(suffix_of "$2") seed=$2 args=()
  shift 2
  args+=(--workdir="$workdir")
  for gin_file in "$@"; do args+=(--gin_file="$gin_file"); done
  args+=(--gin_bindings="data.ReplayDataset.shard_dir = '$SHARD_DIR'"
    --gin_bindings="train.seed = $seed" "${extra[@]}")
  (IFS=$'\t'; echo "${args[*]}") >>"$PLAN"
  RUNS+=("$workdir")
}

train_plan() {  # Checks every planned run, then trains (resumes, or reuses) each in order.
  $PY -m scaled_ql.check_runs --plan="$PLAN"
  local number=0 total
  total=$(wc -l <"$PLAN")
  while IFS=$'\t' read -r -a args <&3; do
    number=$((number + 1))
    echo "== $STUDY, run $number of $total: ${args[0]#--workdir=}"
    $PY -m scaled_ql.pretrain "${args[@]}"
  done 3<"$PLAN"
}

report_plan() {  # report_plan CONFIRMATORY [compare flags...]: the report, then the table
  echo "== $STUDY: results (evaluation protocol $PROTOCOL)"
  $PY -m scaled_ql.report --runs="$(IFS=,; echo "${RUNS[*]}")" --output="$REPORT" \
    --task_bootstrap --protocol="$PROTOCOL" --verbosity=-1 >/dev/null
  compare_plan "$@"
}

compare_plan() {  # compare_plan CONFIRMATORY [compare flags...]: the table of RUNS, to REPORT
  local data=() archive=()
  [ -d "$DATA_DIR" ] && data=(--data_dir="$DATA_DIR")
  [ -n "${ARCHIVE:-}" ] && archive=(--archive="$ARCHIVE")
  mkdir -p "$REPORT"
  $PY -m scaled_ql.report.compare --runs="$(IFS=,; echo "${RUNS[*]}")" "${data[@]}" \
    --protocol="$PROTOCOL" --confirmatory="$1" --output="$REPORT/${STUDY}_results.md" \
    "${archive[@]}" "${@:2}"
}
