"""The random-access shard format written once by `python -m data_prep.convert`, and its reader.

Layout, one directory per converted DQN Replay suffix, rows in time order (oldest first):

  {shard_dir}/{Game}/{run}/{suffix:02d}/observation.u8   raw uint8 [N, 84, 84]
                                       /action.i32        raw int32 [N]
                                       /reward.f32        raw float32 [N] (clipped)
                                       /terminal.u8       raw uint8 [N]
                                       /meta.json         written last: the completeness marker

`N` is the number of rows that are new in this suffix (all C rows for a full checkpoint; fewer for
a partial last file). `meta.json["contiguous_with_previous"]` says whether row 0 directly follows
the last row of suffix k-1 (true when add counts differ by at most C), so that episodes crossing a
file boundary are stitched instead of cut. `meta.json["game"]` names the game whose action set
convert checked the actions against: the reader refuses the suffix under another game's name.
Reads use `os.preadv` into caller-owned buffers: the page cache is shared and never counted in
this process's RSS, unlike touched memory-mapped pages.
"""

import dataclasses
import json
import os
import zlib
from collections.abc import Sequence

import numpy as np

from scaled_ql import runs
from scaled_ql.data import dqn_replay

FORMAT_VERSION = 1
FRAME_BYTES = 84 * 84
# `convert --compress`: observation.u8 is replaced by observation.z, zlib (level 1) blocks of
# BLOCK_ROWS rows, and observation.zindex.npy, int64 [num_blocks + 1] byte offsets. About 17x
# smaller on Atari frames (the real 3.5 TB dataset would otherwise unpack to ~100 TB); chunk loads
# then decompress (~300 MB/s per core) in the sampler's I/O threads.
BLOCK_ROWS = 256
# (file name, dtype) of every per-row array.
ROW_FILES = (
  ("observation.u8", np.uint8),
  ("action.i32", np.int32),
  ("reward.f32", np.float32),
  ("terminal.u8", np.uint8),
)
CONVERT_HINT = (
  "python -m data_prep.convert --replay_dir=<DQN Replay root> --shard_dir={shard_dir} "
  "--games={game} --runs=<runs> --suffixes=<suffixes>"
)


def suffix_dir(shard_dir: str, game: str, run: int, suffix: int) -> str:
  return os.path.join(shard_dir, game, str(run), f"{suffix:02d}")


def write_meta(directory: str, meta: dict) -> None:
  """Atomically writes `meta.json`, which marks a converted suffix complete."""
  text = json.dumps(dict(meta, format_version=FORMAT_VERSION), indent=1)
  runs.write_atomically(os.path.join(directory, "meta.json"), text)


def read_meta(directory: str) -> dict | None:
  """Returns a converted suffix's metadata, or None if it is absent (not converted or partial)."""
  path = os.path.join(directory, "meta.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    text = f.read()
  try:
    meta = json.loads(text)
  except json.JSONDecodeError as e:
    meta = f"not JSON ({e})"
  if not isinstance(meta, dict) or not isinstance(meta.get("num_rows"), int):
    problem = meta if isinstance(meta, str) else "no num_rows"
    raise dqn_replay.DataError(f"{path}: {problem}; delete {directory} and convert it again")
  if meta.get("format_version") != FORMAT_VERSION:
    raise dqn_replay.DataError(f"{path}: format_version {meta.get('format_version')} unsupported")
  # Every row file must hold num_rows rows: a short one would fail only when its end is read.
  sizes = [(name, meta["num_rows"] * np.dtype(dtype).itemsize) for name, dtype in ROW_FILES[1:]]
  if meta.get("compressed"):
    index = np.load(os.path.join(directory, "observation.zindex.npy"), allow_pickle=False)
    actual = os.path.getsize(os.path.join(directory, "observation.z"))
    if len(index) != -(-meta["num_rows"] // BLOCK_ROWS) + 1 or index[-1] != actual:
      raise dqn_replay.DataError(f"{directory}/observation.z: {actual} bytes, index disagrees")
  else:
    sizes.insert(0, ("observation.u8", meta["num_rows"] * FRAME_BYTES))
  for name, expected in sizes:
    actual = os.path.getsize(os.path.join(directory, name))
    if actual != expected:
      raise dqn_replay.DataError(f"{directory}/{name}: {actual} bytes, expected {expected}")
  return meta


def compress_observations(directory: str) -> None:
  """Replaces `observation.u8` by zlib blocks `observation.z` + `observation.zindex.npy`."""
  raw = os.path.join(directory, "observation.u8")
  num_rows = os.path.getsize(raw) // FRAME_BYTES
  offsets = [0]
  with open(raw, "rb") as src, open(os.path.join(directory, "observation.z"), "wb") as dst:
    for _ in range(0, num_rows, BLOCK_ROWS):
      block = zlib.compress(src.read(BLOCK_ROWS * FRAME_BYTES), 1)
      dst.write(block)
      offsets.append(offsets[-1] + len(block))
  np.save(os.path.join(directory, "observation.zindex.npy"), np.array(offsets, np.int64))
  os.remove(raw)


# --------------------------------------------------------------------------------------------------
# Suffix selections.


def parse_suffixes(spec: str | Sequence[int]) -> list[int] | None:
  """Parses a suffix selection.

  Args:
    spec: "all" (every suffix present: near-optimal data), "first20" (0..9: the paper's first 20%,
      low-quality data), "3-7,12" style ranges, or a sequence of ints. Suffixes are the files'
      own 0-based numbers (0..49 full, 50 partial), never shifted to 1..50.

  Returns:
    Sorted suffixes, or None for "all".
  """
  if not isinstance(spec, str):
    return sorted({int(s) for s in spec})
  spec = spec.strip().lower()
  if spec == "all":
    return None
  if spec == "first20":
    return list(range(10))
  out = set()
  for part in spec.split(","):
    lo, _, hi = part.partition("-")
    out.update(range(int(lo), int(hi or lo) + 1))
  return sorted(out)


def parse_runs(spec: str | int | Sequence[int]) -> list[int]:
  """Parses runs: an int, "1,2", "1-5" or a sequence (DQN Replay runs are numbered 1..5)."""
  if isinstance(spec, int):
    return [spec]
  return parse_suffixes(spec) or []


# --------------------------------------------------------------------------------------------------
# Segments: maximal runs of time-contiguous converted suffixes of one (game, run).


@dataclasses.dataclass(frozen=True)
class Part:
  directory: str  # a converted suffix directory
  first_row: int  # first row of that suffix used (within the suffix)
  num_rows: int
  compressed: bool = False  # observations in zlib blocks (convert --compress)


@dataclasses.dataclass(frozen=True)
class Segment:
  """Rows that form one time-contiguous stream; row indices are global within the segment."""

  parts: tuple[Part, ...]

  @property
  def num_rows(self) -> int:
    return sum(p.num_rows for p in self.parts)


def _missing(shard_dir: str, game: str, what: str) -> dqn_replay.DataError:
  hint = CONVERT_HINT.format(shard_dir=shard_dir, game=game)
  return dqn_replay.DataError(f"{shard_dir}: {what} for game {game!r}. Convert it first: {hint}")


def find_segments(
  shard_dir: str,
  game: str,
  runs: Sequence[int],
  suffixes: str | Sequence[int] = "all",
  row_fraction: float = 1.0,
) -> list[Segment]:
  """Lists the selected, converted data of one game as contiguous segments.

  Args:
    shard_dir: output of `python -m data_prep.convert`.
    game: e.g. "Breakout".
    runs: run numbers.
    suffixes: see `parse_suffixes`.
    row_fraction: in (0, 1]; keeps the first `ceil(row_fraction * N)` rows of every selected
      suffix, so a small fraction (e.g. 1% for offline fine-tuning) is spread over the whole run.

  Returns:
    Segments; never empty.

  Raises:
    DataError: naming the directory, the game and the convert command, if nothing is there;
      naming the directory and both games, if it was converted as another game's data.
  """
  if not 0.0 < row_fraction <= 1.0:
    raise ValueError(f"row_fraction must be in (0, 1], got {row_fraction}")
  if not os.path.isdir(shard_dir):
    raise _missing(shard_dir, game, "directory does not exist")
  wanted = parse_suffixes(suffixes)
  segments = []
  for run in runs:
    run_dir = os.path.join(shard_dir, game, str(run))
    present = (
      sorted(int(d) for d in os.listdir(run_dir) if d.isdigit()) if os.path.isdir(run_dir) else []
    )
    selected = present if wanted is None else [s for s in wanted if s in present]
    if wanted is not None and len(selected) != len(wanted):
      missing = sorted(set(wanted) - set(present))
      raise _missing(shard_dir, game, f"run {run} lacks converted suffixes {missing}")
    parts, prev = [], None
    for suffix in selected:
      directory = suffix_dir(shard_dir, game, run, suffix)
      meta = read_meta(directory)
      if meta is None:
        raise _missing(shard_dir, game, f"{directory} is incompletely converted (no meta.json)")
      # Convert checked the actions against the game it names (older shards name none).
      if meta.get("game", game) != game:
        raise dqn_replay.DataError(
          f"{directory}: converted as {meta['game']}'s data, read as {game}'s: its actions index "
          f"{meta['game']}'s action set"
        )
      num_rows = int(np.ceil(row_fraction * meta["num_rows"]))
      stitched = prev == suffix - 1 and meta["contiguous_with_previous"] and row_fraction == 1.0
      if parts and not stitched:
        segments.append(Segment(tuple(parts)))
        parts = []
      parts.append(Part(directory, 0, num_rows, bool(meta.get("compressed"))))
      prev = suffix
    if parts:
      segments.append(Segment(tuple(parts)))
  if not segments:
    raise _missing(shard_dir, game, f"no converted data for runs {list(runs)}")
  if not sum(segment.num_rows for segment in segments):
    raise _missing(shard_dir, game, f"the selected suffixes of runs {list(runs)} hold no rows")
  return segments


# --------------------------------------------------------------------------------------------------
# Reading rows.


class RowReader:
  """Reads row ranges of segments with `os.preadv`, keeping file descriptors open."""

  def __init__(self):
    self._fds: dict[str, int] = {}
    self._indexes: dict[str, np.ndarray] = {}

  def _fd(self, path: str) -> int:
    fd = self._fds.get(path)
    if fd is None:
      fd = self._fds[path] = os.open(path, os.O_RDONLY)
    return fd

  def read(self, segment: Segment, lo: int, hi: int, out: dict[str, np.ndarray]) -> None:
    """Reads segment rows [lo, hi) into the first `hi - lo` rows of each array in `out`.

    Args:
      segment: where to read.
      lo, hi: global row range within the segment.
      out: file name (see ROW_FILES) -> destination array with at least `hi - lo` rows.
    """
    dst, base = 0, 0
    for part in segment.parts:
      a, b = max(lo, base), min(hi, base + part.num_rows)
      if a < b:
        for name, array in out.items():
          if name == "observation.u8" and part.compressed:
            self._read_compressed(
              part.directory, part.first_row + a - base, array[dst : dst + b - a]
            )
            continue
          row_bytes = array[0].nbytes
          view = memoryview(array[dst : dst + b - a].reshape(-1).view(np.uint8))
          offset = (part.first_row + a - base) * row_bytes
          path = os.path.join(part.directory, name)
          got = os.preadv(self._fd(path), [view], offset)
          if got != len(view):
            raise dqn_replay.DataError(f"{path}: short read at byte {offset} (file truncated?)")
        dst += b - a
      base += part.num_rows

  def _read_compressed(self, directory: str, first: int, out: np.ndarray) -> None:
    """Reads rows [first, first + len(out)) of a compressed observation file into `out`."""
    index = self._indexes.get(directory)
    if index is None:
      path = os.path.join(directory, "observation.zindex.npy")
      index = self._indexes[directory] = np.load(path, allow_pickle=False)
    path = os.path.join(directory, "observation.z")
    b0, b1 = first // BLOCK_ROWS, (first + len(out) - 1) // BLOCK_ROWS
    data = os.pread(self._fd(path), int(index[b1 + 1] - index[b0]), int(index[b0]))
    row = b0 * BLOCK_ROWS
    for b in range(b0, b1 + 1):
      try:
        block = zlib.decompress(data[index[b] - index[b0] : index[b + 1] - index[b0]])
      except zlib.error as e:
        raise dqn_replay.DataError(f"{path}: corrupt block {b} ({e})") from e
      frames = np.frombuffer(block, np.uint8).reshape(-1, 84, 84)
      lo, hi = max(first, row), min(first + len(out), row + len(frames))
      out[lo - first : hi - first] = frames[lo - row : hi - row]
      row += len(frames)

  def close(self) -> None:
    for fd in self._fds.values():
      os.close(fd)
    self._fds.clear()
