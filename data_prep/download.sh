#!/usr/bin/env bash
# Fetches DQN Replay checkpoints (Agarwal et al. 2020) from gs://atari-replay-datasets/dqn with gsutil.
#
#   bash data_prep/download.sh --output_dir=/data/dqn --games=Pong,Breakout --runs=1 --suffixes=0-9
#   bash data_prep/download.sh --dry_run --output_dir=/data/dqn --games=Pong --runs=1-5 --suffixes=all
#
# Flags:
#   --output_dir  local root; files land in {output_dir}/{Game}/{run}/replay_logs/ (the bucket's layout,
#                 which data_prep.convert and scaled_ql.data read).
#   --games       comma-separated DQN Replay game names (CamelCase, e.g. MsPacman).
#   --runs        runs 1..5: "1", "1,3" or "1-5".
#   --suffixes    "all" (0..49 plus the partial 50 where it exists), "first20" (0..9: the paper's
#                 low-quality first 20%), or ranges like "0-9,49". Suffixes are the files' own
#                 0-based numbers.
#   --dry_run     print the gsutil commands instead of running them.
# One full suffix is ~6 files, ~1.5-2 GB compressed (7 GB of frames once unpacked by convert); a run
# is ~51 suffixes. Needs gsutil (Google Cloud SDK); the bucket is public (requester pays: no).
# Optional: `python -m data_prep.convert --replay_dir=gs://atari-replay-datasets/dqn ...` streams
# the files from the bucket straight into shards, with no local copy of the raw data. Download
# first when the same files are converted more than once, or the network is slow or metered.
set -euo pipefail

BUCKET="gs://atari-replay-datasets/dqn"
output_dir="" games="" runs="1" suffixes="all" dry_run=0
for arg in "$@"; do
  case "$arg" in
    --output_dir=*) output_dir="${arg#*=}" ;;
    --games=*) games="${arg#*=}" ;;
    --runs=*) runs="${arg#*=}" ;;
    --suffixes=*) suffixes="${arg#*=}" ;;
    --dry_run) dry_run=1 ;;
    *) echo "download.sh: unknown argument '$arg'" >&2; exit 2 ;;
  esac
done
if [[ -z "$output_dir" || -z "$games" ]]; then
  echo "download.sh: --output_dir and --games are required" >&2
  exit 2
fi

# Expands "1-3,7" into "1 2 3 7"; rejects anything else.
expand() {
  local spec="$1" part out=()
  IFS=',' read -ra parts <<< "$spec"
  for part in "${parts[@]}"; do
    if [[ "$part" =~ ^([0-9]+)-([0-9]+)$ ]]; then
      out+=($(seq "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"))
    elif [[ "$part" =~ ^[0-9]+$ ]]; then
      out+=("$part")
    else
      echo "download.sh: bad range '$part' in '$spec'" >&2
      exit 2
    fi
  done
  echo "${out[@]}"
}

case "$suffixes" in
  all) suffix_list="all" ;;
  first20) suffix_list="$(expand 0-9)" ;;
  *) suffix_list="$(expand "$suffixes")" ;;
esac

run() {
  if (( dry_run )); then
    local line
    printf -v line '%q ' "$@"
    echo "${line% }"
  else
    "$@"
  fi
}

if (( ! dry_run )) && ! command -v gsutil > /dev/null; then
  echo "download.sh: gsutil not found; install the Google Cloud SDK or use --dry_run" >&2
  exit 1
fi

run_list=$(expand "$runs")  # Fails the script on a bad --runs (a loop's $(...) would not).
IFS=',' read -ra game_list <<< "$games"
for game in "${game_list[@]}"; do
  for r in $run_list; do
    dest="${output_dir}/${game}/${r}/replay_logs"
    run mkdir -p "$dest"
    if [[ "$suffix_list" == "all" ]]; then
      run gsutil -m cp "${BUCKET}/${game}/${r}/replay_logs/*" "$dest/"
    else
      for k in $suffix_list; do
        run gsutil -m cp "${BUCKET}/${game}/${r}/replay_logs/*_ckpt.${k}.gz" "$dest/"
      done
    fi
  done
done
