r"""Converts DQN Replay checkpoints (or a local TFDS RLU copy) into the random-access shard format.

Streaming (an observation file is never held in memory: blocks of 16k rows are decompressed and
written in place) and resumable (each suffix is written to `NN.partial/` and renamed to `NN/` when
complete, so a killed conversion redoes at most one suffix per game-run; finished ones are skipped
unless their source files have changed since, which are converted again).

  python -m data_prep.convert --replay_dir=/data/dqn --shard_dir=/data/shards \
      --games=Breakout,Pong --runs=1 --suffixes=first20
  python -m data_prep.convert --source=tfds --tfds_data_dir=~/tensorflow_datasets \
      --shard_dir=/data/shards --games=Pong --runs=1 --suffixes=0-4

  python -m data_prep.convert --replay_dir=gs://atari-replay-datasets/dqn \
      --shard_dir=/data/shards --games=Pong --runs=1 --suffixes=first20

Flags:
  --replay_dir: root holding `{Game}/{run}/replay_logs/` (gs://atari-replay-datasets/dqn layout):
    a local copy, or the bucket itself, streamed (each file decompressed as it downloads,
    through `etils.epath`; nothing of the raw data is kept on disk; needs Google Cloud
    credentials, e.g. `gcloud auth application-default login`).
  --shard_dir: output root, read by `scaled_ql.data.ReplayDataset`; a local (or mounted)
    filesystem: the sampler reads shards at random offsets with os.preadv.
  --games, --runs, --suffixes: selection ("all", "first20", "0-9,12"); suffixes keep the files' own
    0-based numbers.
  --source: `dqn_replay` (default) or `tfds` (`rlu_atari_checkpoints_ordered` in --tfds_data_dir;
    split `checkpoint_NN` becomes suffix NN).
  --skip_bad: on a bad suffix log a warning, count it and continue (default: stop with the error).
  --compress: store frames as zlib blocks (~17x smaller than raw; the default raw format takes
    7 GB per 1M-row checkpoint, i.e. ~2.8 TB for the paper's 40 games x first 20%).

Convert a partial last suffix (50) with its predecessor's files present in --replay_dir: its
add_count tells which of its rows are new; without it all rows are kept (duplicating suffix 49's).
"""

import hashlib
import os
import shutil
from collections.abc import Iterable

import numpy as np
from absl import app, flags, logging
from etils import epath

from scaled_ql.data import dqn_replay, shards

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines the command-line flags (only when run as a program, so modules import cleanly)."""
  flags.DEFINE_string("replay_dir", None, "DQN Replay root ({Game}/{run}/replay_logs).")
  flags.DEFINE_string("shard_dir", None, "Output directory of converted shards.")
  flags.DEFINE_list("games", None, "Games to convert, e.g. Breakout,Pong.")
  flags.DEFINE_string("runs", "1", "Runs, e.g. 1 or 1-5.")
  flags.DEFINE_string("suffixes", "all", "all | first20 | ranges like 0-9,12.")
  flags.DEFINE_enum("source", "dqn_replay", ["dqn_replay", "tfds"], "Input format.")
  flags.DEFINE_string("tfds_data_dir", None, "TFDS data_dir (for --source=tfds).")
  flags.DEFINE_bool(
    "compress", False, "zlib blocks for frames: ~17x less disk, slower chunk loads."
  )
  flags.DEFINE_bool("skip_bad", False, "Warn and skip bad suffixes instead of failing.")


ROWS_PER_READ = 16384  # observation rows decompressed at a time (115 MB)


class _SuffixWriter:
  """Writes one converted suffix into `{final}.partial/`, renamed to `final` by `commit`."""

  def __init__(self, final_dir: str, num_rows: int | None = None):
    self.final_dir = final_dir
    self.tmp_dir = final_dir + ".partial"
    shutil.rmtree(self.tmp_dir, ignore_errors=True)  # a previous, interrupted attempt
    os.makedirs(self.tmp_dir)
    self.num_rows = num_rows
    self._fds = {}
    for name, dtype in shards.ROW_FILES:
      fd = os.open(os.path.join(self.tmp_dir, name), os.O_WRONLY | os.O_CREAT, 0o644)
      row_bytes = shards.FRAME_BYTES if name.startswith("observation") else np.dtype(dtype).itemsize
      if num_rows is not None:
        os.ftruncate(fd, num_rows * row_bytes)
      self._fds[name] = (fd, dtype)

  def write(self, name: str, row: int, values: np.ndarray) -> None:
    """Writes `values` (rows of file `name`) starting at time-ordered row `row`."""
    fd, dtype = self._fds[name]
    data = np.ascontiguousarray(values, dtype)
    os.pwrite(fd, data.tobytes(), row * data[0].nbytes if len(data) else 0)

  def commit(self, meta: dict, compress: bool = False) -> None:
    for fd, _ in self._fds.values():
      os.fsync(fd)
      os.close(fd)
    if compress:
      shards.compress_observations(self.tmp_dir)
      meta = dict(meta, compressed=True, block_rows=shards.BLOCK_ROWS)
    shards.write_meta(self.tmp_dir, dict(meta, num_rows=self.num_rows))
    stale = self.final_dir + ".stale"  # A suffix converted again replaces its old copy.
    shutil.rmtree(stale, ignore_errors=True)
    if os.path.exists(self.final_dir):
      os.rename(self.final_dir, stale)
    os.rename(self.tmp_dir, self.final_dir)
    shutil.rmtree(stale, ignore_errors=True)


def _check_padding(path: str, info: dqn_replay.SuffixInfo, order: np.ndarray) -> None:
  """Checks that the 3 rows after each terminal (time order) are zero padding rows."""
  terminal, action, reward = info.terminal[order], info.action[order], info.reward[order]
  ends = np.flatnonzero(terminal)
  if info.add_count < info.capacity:  # never wrapped: the log starts with an episode's padding
    ends = np.concatenate([[-1], ends])
  for k in range(1, dqn_replay.STACK_SIZE):
    rows = ends[ends + k < len(order)] + k
    if terminal[rows].any() or action[rows].any() or reward[rows].any():
      raise dqn_replay.DataError(
        f"{path}: rows after a terminal are not zero padding: add_count is inconsistent with the "
        "arrays, or the files are not DQN Replay buffers"
      )


def source_stamp(src_dir: str, suffix: int) -> dict[str, list]:
  """Each file of a DQN Replay suffix: its size, plus a sha256 for terminal and add_count.

  Kept in the converted suffix's meta: a suffix whose files have changed since no longer
  matches its stamp and is converted again. The collector, resuming, rewrites the terminal
  file of checkpoint k-1 (closing the episode its end cut) without changing its size, so
  that file is hashed (a few hundred KB; a copy or a touch keeps the stamp); the others are
  only sized, so that skipping a converted suffix reads almost nothing.
  """
  stamp = {}
  for name in dqn_replay.REQUIRED_FILES:
    path = epath.Path(dqn_replay.filename(src_dir, name, suffix))
    if not path.exists():  # A missing file is reported by the reader, with what to do.
      continue
    stamp[name] = [path.stat().length]
    if name in (dqn_replay.STORE_PREFIX + "terminal", "add_count"):
      stamp[name].append(hashlib.sha256(path.read_bytes()).hexdigest())
  return stamp


def convert_dqn_suffix(
  src_dir: str, suffix: int, out_dir: str, game: str, compress: bool = False
) -> int:
  """Converts one DQN Replay suffix of `game`; returns the number of rows written.

  Keeps the rows that are new since suffix k-1 when k-1's add_count is available (the partial last
  file holds old rows past `add_count % C`), all rows otherwise. Actions outside `game`'s action
  set are refused before any observation is read.
  """
  stamp = source_stamp(src_dir, suffix)  # Before reading: a later change is then noticed.
  info = dqn_replay.read_suffix_info(src_dir, suffix, game)
  capacity = info.capacity
  start, num_rows = dqn_replay.time_order(capacity, info.add_count)
  prev_path = dqn_replay.filename(src_dir, "add_count", suffix - 1)
  contiguous, new_rows = False, num_rows
  if suffix > 0 and epath.Path(prev_path).exists():
    delta = info.add_count - int(dqn_replay.load_array(prev_path))
    if delta <= 0:
      path = dqn_replay.filename(src_dir, "add_count", suffix)
      raise dqn_replay.DataError(
        f"{path}: add_count {info.add_count} not above suffix {suffix - 1}'s"
      )
    contiguous, new_rows = delta <= capacity, min(num_rows, delta)
  # Time position t (0 = oldest) lives at buffer row (start + t) % capacity; keep the last new_rows.
  order = (start + np.arange(num_rows)) % capacity
  _check_padding(dqn_replay.filename(src_dir, "add_count", suffix), info, order)
  keep = order[num_rows - new_rows :]
  writer = _SuffixWriter(out_dir, new_rows)
  writer.write("action.i32", 0, info.action[keep])
  writer.write("reward.f32", 0, info.reward[keep])
  writer.write("terminal.u8", 0, info.terminal[keep])
  # Inverse map: buffer row -> output row (or -1 if not kept).
  out_row = np.full(capacity, -1, np.int64)
  out_row[keep] = np.arange(new_rows)
  obs_path = dqn_replay.filename(src_dir, dqn_replay.STORE_PREFIX + "observation", suffix)
  buffer_row = 0
  for block in dqn_replay.stream_rows(obs_path, ROWS_PER_READ):
    dst = out_row[buffer_row : buffer_row + len(block)]
    kept = np.flatnonzero(dst >= 0)
    # Kept rows form at most two runs of consecutive output rows in a block (split at the wrap).
    for run in np.split(kept, np.flatnonzero(np.diff(dst[kept]) != 1) + 1):
      if len(run):
        writer.write("observation.u8", int(dst[run[0]]), block[run[0] : run[-1] + 1])
    buffer_row += len(block)
  writer.commit(
    compress=compress,
    meta=dict(
      add_count=info.add_count,
      capacity=capacity,
      contiguous_with_previous=contiguous,
      game=game,
      source=src_dir,
      source_stamp=stamp,
    ),
  )
  return new_rows


def convert_rows(
  blocks: Iterable[tuple[np.ndarray, ...]],
  out_dir: str,
  game: str,
  meta: dict,
  compress: bool = False,
) -> int:
  """Writes time-ordered row blocks `(obs [r,84,84], action, reward, terminal)` as one suffix.

  Each block's actions are checked against `game`'s action set before the block is written.
  """
  where = f"{meta.get('source')} checkpoint {meta.get('checkpoint')}"
  writer = _SuffixWriter(out_dir)
  row = 0
  for obs, action, reward, terminal in blocks:
    dqn_replay.check_actions(where, action, game)
    writer.write("observation.u8", row, obs)
    writer.write("action.i32", row, action)
    writer.write("reward.f32", row, np.clip(reward, -1.0, 1.0))
    writer.write("terminal.u8", row, terminal)
    row += len(obs)
  if row == 0:
    raise dqn_replay.DataError(f"{meta.get('source')}: no rows (empty checkpoint)")
  writer.num_rows = row
  writer.commit(dict(meta, contiguous_with_previous=False, game=game), compress)
  return row


def convert(
  replay_dir: str | None,
  shard_dir: str,
  games: list[str],
  runs: list[int],
  suffixes: str,
  source: str = "dqn_replay",
  tfds_data_dir: str | None = None,
  skip_bad: bool = False,
  compress: bool = False,
) -> dict[str, int]:
  """Converts the selection; returns counts {"converted", "skipped_done", "skipped_bad"}.

  `replay_dir` may be a bucket URI (read through etils.epath); `shard_dir` must be local.
  """
  if "://" in shard_dir:
    raise ValueError(
      f"--shard_dir={shard_dir}: shards are written to a local (or mounted) filesystem, which "
      "the sampler reads at random offsets (os.preadv); only --replay_dir may be a bucket."
    )
  counts = {"converted": 0, "skipped_done": 0, "skipped_bad": 0}
  wanted = shards.parse_suffixes(suffixes)
  for game in games:
    for run in runs:
      if source == "tfds":
        from scaled_ql.data import tfds_reader  # TensorFlow only when asked for.

        available = tfds_reader.list_checkpoints(tfds_data_dir, game, run)
        src = f"{tfds_data_dir} rlu_atari_checkpoints_ordered/{game}_run_{run}"
      else:
        src = dqn_replay.replay_dir(replay_dir, game, run)
        available = dqn_replay.list_suffixes(src)
      if not available:
        raise dqn_replay.DataError(f"{src}: no checkpoints found for game {game!r} run {run}")
      selected = available if wanted is None else wanted
      missing = sorted(set(selected) - set(available))
      if missing:
        raise dqn_replay.DataError(f"{src}: suffixes {missing} missing (present: {available})")
      for suffix in selected:
        out_dir = shards.suffix_dir(shard_dir, game, run, suffix)
        meta = shards.read_meta(out_dir)
        if meta is not None:
          stamp = meta.get("source_stamp")  # None: converted without one (or from TFDS).
          if stamp is None or stamp == source_stamp(src, suffix):
            counts["skipped_done"] += 1
            continue
          logging.warning(
            "%s suffix %d changed since it was converted: converting again", src, suffix
          )
        os.makedirs(os.path.dirname(out_dir), exist_ok=True)
        try:
          if source == "tfds":
            blocks = tfds_reader.checkpoint_rows(tfds_data_dir, game, run, suffix)
            convert_rows(blocks, out_dir, game, dict(source=src, checkpoint=suffix), compress)
          else:
            convert_dqn_suffix(src, suffix, out_dir, game, compress)
          counts["converted"] += 1
          logging.info("converted %s run %d suffix %d", game, run, suffix)
        except dqn_replay.DataError as e:
          shutil.rmtree(out_dir + ".partial", ignore_errors=True)
          if not skip_bad:
            raise
          logging.warning("skipping bad suffix: %s", e)
          counts["skipped_bad"] += 1
  return counts


def main() -> None:
  counts = convert(
    FLAGS.replay_dir,
    FLAGS.shard_dir,
    FLAGS.games,
    shards.parse_runs(FLAGS.runs),
    FLAGS.suffixes,
    FLAGS.source,
    FLAGS.tfds_data_dir,
    FLAGS.skip_bad,
    FLAGS.compress,
  )
  print(f"convert: {counts}")


if __name__ == "__main__":
  from scaled_ql import cli  # A bad file or directory: one line (`--traceback` for more).

  define_flags()
  flags.mark_flags_as_required(["shard_dir", "games"])
  app.run(lambda argv: cli.run_main(main))
