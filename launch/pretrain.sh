#!/usr/bin/env bash
# Pretrains Scaled QL on a Cloud TPU pod slice: every worker runs
# `python -m scaled_ql.pretrain --distributed` from the same commit, with the same gin files,
# bindings and workdir (jax.distributed finds the slice's hosts by itself).
#
#   TPU_NAME=sql-v4-64 ZONE=us-central2-b WORKDIR=gs://BUCKET/runs/sql_near_optimal \
#   SHARD_DIR=/mnt/shards bash launch/pretrain.sh [--dry_run] pretrain_near_optimal.gin [BINDING...]
#
# Every command is printed as `+ command`; --dry_run (or DRY_RUN=1) prints them and runs nothing.
#   1. CREATE=1 creates the slice if it does not exist (a PREEMPTED or TERMINATED one is deleted and
#      created again): ACCELERATOR_TYPE (v4-64, v3-128, ...), RUNTIME_VERSION (default
#      tpu-ubuntu2204-base, the image for v4 and older: cloud.google.com/tpu/docs/runtimes),
#      PROVISIONING=spot or preemptible for a cheaper slice that can be taken away, CREATE_FLAGS
#      for more `tpu-vm create` flags (e.g. --data-disk=source=DISK,mode=read-only).
#   2. The code on every worker, at one commit (logged): by default a `git archive` of this
#      checkout's HEAD (or of COMMIT), copied with `tpu-vm scp --worker=all` (uncommitted changes
#      are not copied); with REPO=<clone URL>, each worker clones REPO and checks out COMMIT (a
#      commit id or tag; default this checkout's HEAD).
#   3. Set-up on every worker, idempotent: Python 3.11 if missing, then EXTRAS=tpu launch/setup.sh;
#      checks that SHARD_DIR (and, for a path WORKDIR, its parent) exists there and that no run
#      is still going.
#   4. The run on every worker, detached from ssh (nohup + setsid: a dropped ssh does not stop
#      it), appending to ~/scaled_ql/logs/pretrain.log on each worker.
# Arguments: one ending in .gin is a --gin_file; any other --flag goes to scaled_ql.pretrain as
# is (e.g. --heartbeat_timeout_s=300); anything else is a gin binding.
# WORKDIR: gs://BUCKET/PATH, or an absolute path on a filesystem mounted on every worker
#   (Filestore/NFS; not gcsfuse, whose renames are not atomic): all hosts write the checkpoints
#   together, host 0 the metrics and logs.
# SHARD_DIR: an absolute path on every worker holding the converted shards (a read-only persistent
#   disk attached to all workers, a gcsfuse mount, or a copy on each); each host reads only its
#   own share of the chunks.
# After a preemption or a crash, run the same command again: the trainer resumes from the last
# checkpoint in WORKDIR. Optional: PROJECT (gcloud --project), WORKER_PYTHON (python3.11).
#   bash launch/pretrain.sh --logs    the last LOG_LINES (20) lines of every worker's log
#   bash launch/pretrain.sh --stop    stops the run on every worker (by the pid it recorded)
set -euo pipefail  # (empty arrays are expanded as ${a[@]+"${a[@]}"}: macOS bash 3.2 and set -u)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=scaled_ql        # the code on each worker, relative to its home directory
LOG=logs/pretrain.log  # relative to DIR; logs/pretrain.pid holds the run's pid

die() {
  echo "error: $*" >&2
  exit 2
}
log() { echo "[pretrain] $*"; }

quote() {  # Quotes each argument for a POSIX shell: bare when safe, else in "..." or '...'.
  local out=() a
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
      out+=("$a")
    elif [[ $a == *\'* && $a != *[\"\$\`\\!]* ]]; then  # holds ' and nothing special within "..."
      out+=("\"$a\"")
    else
      out+=("'${a//\'/\'\\\'\'}'")
    fi
  done
  echo "${out[*]}"
}

run() {  # Prints the command, then runs it unless this is a dry run.
  echo "+ $(quote "$@")"
  [ "$DRY_RUN" = 1 ] || "$@"
}

gcloud_tpu() { run gcloud compute tpus tpu-vm "$@" --zone="$ZONE" ${PROJECT:+--project="$PROJECT"}; }
on_workers() { gcloud_tpu ssh "$TPU_NAME" --worker=all --command="$1"; }

# == Arguments
DRY_RUN=${DRY_RUN:-0}
action=launch
gin_files=() bindings=() flags=()
for arg in "$@"; do
  case $arg in
    --dry_run) DRY_RUN=1 ;;
    --logs) action=logs ;;
    --stop) action=stop ;;
    -h | --help)
      sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    --*) flags+=("$arg") ;;
    *.gin) gin_files+=("$arg") ;;
    *) bindings+=("$arg") ;;
  esac
done

missing=()
needed=(TPU_NAME ZONE)
[ "$action" = launch ] && needed+=(WORKDIR SHARD_DIR)
for var in "${needed[@]}"; do [ -n "${!var:-}" ] || missing+=("$var"); done
if [ ${#missing[@]} -gt 0 ]; then
  die "set $(IFS=,; echo "${missing[*]}" | sed 's/,/, /g') (e.g. TPU_NAME=sql-v4-64" \
    "ZONE=us-central2-b WORKDIR=gs://BUCKET/runs/sql SHARD_DIR=/mnt/shards; see launch/pretrain.sh --help)"
fi

# == Watching and stopping a run
if [ "$action" = logs ]; then
  on_workers "tail -n $(quote "${LOG_LINES:-20}") $DIR/$LOG | sed \"s/^/[\$(hostname)] /\""
  exit 0
fi
if [ "$action" = stop ]; then
  on_workers "if kill \"\$(cat $DIR/logs/pretrain.pid 2>/dev/null)\" 2>/dev/null; then \
echo \"\$(hostname): stopped\"; else echo \"\$(hostname): no run going\"; fi"
  exit 0
fi

[ ${#gin_files[@]} -gt 0 ] || die "give at least one gin file, e.g. bash launch/pretrain.sh pretrain_near_optimal.gin"
case $WORKDIR in
  gs://?* | /*) ;;
  *) die "WORKDIR must be gs://BUCKET/PATH or an absolute path mounted on every worker, not '$WORKDIR'" ;;
esac
case $SHARD_DIR in
  gs://*) die "SHARD_DIR must be a path on every worker (the sampler reads files, not gs://): mount the bucket with gcsfuse or copy the shards" ;;
  *[\"\\]*) die "SHARD_DIR must not hold a double quote or a backslash (it becomes a gin string)" ;;
  /*) ;;
  *) die "SHARD_DIR must be an absolute path on every worker, not '$SHARD_DIR'" ;;
esac
for b in ${bindings[@]+"${bindings[@]}"} ${flags[@]+"${flags[@]}"}; do
  [[ $b != *$'\n'* ]] || die "give each binding on one line (one holds a newline)"
done

# == 1. The slice
if [ "${CREATE:-0}" = 1 ]; then
  [ -n "${ACCELERATOR_TYPE:-}" ] || die "CREATE=1 needs ACCELERATOR_TYPE (e.g. v4-64 or v3-128)"
  case ${PROVISIONING:-} in
    '' | spot | preemptible) ;;
    *) die "PROVISIONING must be spot, preemptible or empty (on demand), not '$PROVISIONING'" ;;
  esac
  read -ra create_flags <<<"${CREATE_FLAGS:-}"  # e.g. --data-disk=source=DISK,mode=read-only
  create=(create "$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE"
    --version="${RUNTIME_VERSION:-tpu-ubuntu2204-base}" ${PROVISIONING:+--$PROVISIONING} ${create_flags[@]+"${create_flags[@]}"})
  if [ "$DRY_RUN" = 1 ]; then
    log "creating $TPU_NAME unless it exists (a PREEMPTED or TERMINATED one is deleted first):"
    gcloud_tpu "${create[@]}"
  else
    state=$(gcloud compute tpus tpu-vm describe "$TPU_NAME" --zone="$ZONE" \
      ${PROJECT:+--project="$PROJECT"} --format='value(state)' 2>/dev/null) || state=MISSING
    case $state in
      MISSING) gcloud_tpu "${create[@]}" ;;
      PREEMPTED | TERMINATED)
        log "$TPU_NAME is $state: deleting it and creating it again"
        gcloud_tpu delete "$TPU_NAME" --quiet
        gcloud_tpu "${create[@]}"
        ;;
      READY) log "$TPU_NAME exists and is READY" ;;
      *) die "$TPU_NAME is $state; wait until it is READY, or delete it" ;;
    esac
  fi
fi

# == 2. The code: one commit on every worker
# A run still going on a worker must not have its code replaced under it.
busy="if kill -0 \"\$(cat logs/pretrain.pid 2>/dev/null)\" 2>/dev/null; then echo \"error: \$(hostname): \
a run is still going (pid \$(cat logs/pretrain.pid)); stop it first: bash launch/pretrain.sh --stop\" >&2; exit 1; fi"
if [ -n "${REPO:-}" ]; then
  commit=${COMMIT:-HEAD}
  # Resolved here when this checkout knows it, so that the log names a commit id.
  commit=$(git -C "$ROOT" rev-parse --verify --quiet "$commit^{commit}" 2>/dev/null) || commit=${COMMIT:-HEAD}
  log "code: $REPO at commit $commit, cloned on every worker"
  on_workers "set -e; [ -d $DIR/.git ] || git clone --quiet $(quote "$REPO") $DIR; cd $DIR; $busy; \
git fetch --quiet origin; git -c advice.detachedHead=false checkout --quiet --detach $(quote "$commit"); \
git rev-parse HEAD > .launched_commit; echo \"\$(hostname): commit \$(cat .launched_commit)\""
else
  git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1 ||
    die "$ROOT is not a git checkout: set REPO=<clone URL> (and COMMIT) to clone on the workers"
  commit=$(git -C "$ROOT" rev-parse --verify --quiet "${COMMIT:-HEAD}^{commit}") ||
    die "COMMIT=${COMMIT:-HEAD} is not a commit of this checkout"
  log "code: commit $commit of $ROOT (git archive), copied to every worker"
  if [ -z "${COMMIT:-}" ] && [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no)" ]; then
    log "warning: uncommitted changes are not copied; the workers run commit $commit"
  fi
  archive=${TMPDIR:-/tmp}/scaled_ql-$commit.tar.gz
  [ "$DRY_RUN" = 1 ] || trap 'rm -f "$archive"' EXIT
  run git -C "$ROOT" archive --format=tar.gz --output="$archive" "$commit"
  gcloud_tpu scp "$archive" "$TPU_NAME:scaled_ql-$commit.tar.gz" --worker=all
  # Replaces everything but the virtual environment and the logs.
  on_workers "set -e; mkdir -p $DIR; cd $DIR; $busy; \
find . -mindepth 1 -maxdepth 1 ! -name .venv ! -name logs -exec rm -rf {} +; \
tar -xzf ~/scaled_ql-$commit.tar.gz; rm ~/scaled_ql-$commit.tar.gz; echo $commit > .launched_commit; \
echo \"\$(hostname): commit $commit\""
fi

# == 3. Set-up and checks on every worker (before any worker starts)
py=$(quote "${WORKER_PYTHON:-python3.11}")
workdir_check=""
[[ $WORKDIR == /* ]] && workdir_check="[ -d $(quote "$(dirname "$WORKDIR")") ] || \
{ echo \"error: \$(hostname): no parent directory of WORKDIR here:\" $(quote "$(dirname "$WORKDIR")") >&2; exit 1; }; "
# setup.sh reinstalls when setup.py is newer than its last install; an unpacked archive keeps the
# commit's file times, so a setup.py that differs from the last one installed is touched first.
on_workers "set -e; cd $DIR; $busy; \
[ -d $(quote "$SHARD_DIR") ] || { echo \"error: \$(hostname): no SHARD_DIR here:\" $(quote "$SHARD_DIR") >&2; exit 1; }; \
${workdir_check}command -v $py >/dev/null || { sudo apt-get update -qq && sudo apt-get install -y -qq $py $py-venv; }; \
cmp -s setup.py .venv/.launched_setup.py || touch setup.py; PYTHON=$py EXTRAS=tpu bash launch/setup.sh; \
cp setup.py .venv/.launched_setup.py"

# == 4. The run on every worker, detached
train=(.venv/bin/python -m scaled_ql.pretrain --distributed --workdir="$WORKDIR")
for f in "${gin_files[@]}"; do train+=(--gin_file="$f"); done
train+=(--gin_bindings="data.ReplayDataset.shard_dir = \"$SHARD_DIR\"")
for b in ${bindings[@]+"${bindings[@]}"}; do train+=(--gin_bindings="$b"); done
train+=(${flags[@]+"${flags[@]}"})
on_workers "set -e; cd $DIR; $busy; mkdir -p logs; \
echo \"== \$(date -u +%FT%TZ) \$(hostname) commit \$(cat .launched_commit)\" >> $LOG; \
TF_CPP_MIN_LOG_LEVEL=2 nohup setsid $(quote "${train[@]}") >> $LOG 2>&1 < /dev/null & \
echo \$! > logs/pretrain.pid; echo \"\$(hostname): started pid \$!, log ~/$DIR/$LOG\""

if [ "$DRY_RUN" = 1 ]; then
  log "dry run: nothing was run."
else
  log "started on every worker of $TPU_NAME at commit $commit; it runs detached from this shell."
fi
log "logs: TPU_NAME=$TPU_NAME ZONE=$ZONE bash launch/pretrain.sh --logs (worker 0 has the" \
  "progress; --stop stops the run); metrics and TensorBoard: $WORKDIR"
log "after a preemption or a crash, run this same command again: it resumes from the last checkpoint."
