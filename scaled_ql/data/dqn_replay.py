"""The DQN Replay on-disk format (Agarwal et al. 2020): names, streaming reads, validation, writes.

One suffix `k` of `{root}/{Game}/{run}/replay_logs/` is a dopamine `OutOfGraphReplayBuffer.save`:
gzip-wrapped `np.save` files

  $store$_observation_ckpt.k.gz  uint8 [C, 84, 84]   (newest frame of the agent's stack)
  $store$_action_ckpt.k.gz       int32 [C]           (minimal-action-set index)
  $store$_reward_ckpt.k.gz       float32 [C]         (clipped to [-1, 1])
  $store$_terminal_ckpt.k.gz     uint8 [C]
  add_count_ckpt.k.gz            int 0-d             (rows ever added, padding included)
  invalid_range_ckpt.k.gz        [stack_size]        (unused here, but dopamine's load needs it)

`C` is the buffer capacity (1,000,000 in the real data). The arrays are circular buffers: time
order is `roll(arr, -(add_count % C))` once the buffer is full, `arr[:add_count]` before. Files are
never unpickled (`allow_pickle=False` everywhere); the optional `episode_end_indices` pickle is
ignored. Observation files (7 GB uncompressed) are streamed, never loaded whole.

Reading (listing, validation, streaming) goes through `etils.epath`, so `root` may be the bucket
itself (`gs://atari-replay-datasets/dqn`): files are decompressed as they download, with no local
copy. Writing (`data_prep.collect`) is local.
"""

import collections
import csv
import gzip
import os
import re
import typing
import zlib
from typing import Iterator, NamedTuple

import numpy as np
from etils import epath

from scaled_ql import games

STORE_PREFIX = "$store$_"
FRAME_SHAPE = (84, 84)
STACK_SIZE = 4
ARRAY_NAMES = ("observation", "action", "reward", "terminal")
# Files that make a suffix complete (what dopamine's `load` requires, minus the optional pickle).
REQUIRED_FILES = tuple(f"{STORE_PREFIX}{n}" for n in ARRAY_NAMES) + ("add_count", "invalid_range")
_SUFFIX_RE = re.compile(r"^add_count_ckpt\.(\d+)\.gz$")


class DataError(ValueError):
  """A replay file or directory is missing, corrupt or inconsistent. The message names it."""


def filename(replay_dir: str, name: str, suffix: int) -> str:
  """Returns the path of one DQN Replay file, e.g. `$store$_action_ckpt.3.gz`."""
  return os.path.join(replay_dir, f"{name}_ckpt.{suffix}.gz")


def replay_dir(root: str, game: str, run: int) -> str:
  """Returns `{root}/{game}/{run}/replay_logs` (the layout of gs://atari-replay-datasets/dqn)."""
  return os.path.join(root, game, str(run), "replay_logs")


def list_suffixes(directory: str) -> list[int]:
  """Returns the sorted suffixes that have an `add_count` file in `directory` (may be empty)."""
  directory = epath.Path(directory)
  if not directory.is_dir():
    return []
  found = (_SUFFIX_RE.match(path.name) for path in directory.iterdir())
  return sorted(int(m.group(1)) for m in found if m)


# --------------------------------------------------------------------------------------------------
# Streaming reads.


class ArrayStream(NamedTuple):
  """An open `.npy` stream inside a gzip file: header parsed, data not yet read."""

  path: str
  file: gzip.GzipFile  # Decompresses `raw`.
  shape: tuple[int, ...]
  dtype: np.dtype
  raw: typing.BinaryIO  # The compressed file, local or an object being downloaded (epath).

  def close(self) -> None:
    try:
      self.file.close()
    finally:
      self.raw.close()


def open_array(path: str) -> ArrayStream:
  """Opens a gzip-wrapped `.npy` file and parses its header without reading the data.

  Raises:
    DataError: naming `path`, if it is missing, not gzip, not `.npy`, Fortran-ordered, or holds
      Python objects (pickles are refused).
  """
  if not epath.Path(path).exists():
    raise DataError(f"{path}: file missing")
  raw = epath.Path(path).open("rb")
  stream = ArrayStream(path, gzip.GzipFile(fileobj=raw, mode="rb"), (), np.dtype(np.uint8), raw)
  try:
    version = np.lib.format.read_magic(stream.file)
    if version == (1, 0):
      shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream.file)
    else:
      shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream.file)
  except (OSError, EOFError, zlib.error, ValueError) as e:
    stream.close()
    raise DataError(f"{path}: not a gzip-wrapped .npy file ({type(e).__name__}: {e})") from e
  if dtype.hasobject:
    stream.close()
    raise DataError(f"{path}: holds Python objects (dtype {dtype}); pickles are never loaded")
  if fortran and len(shape) > 1:
    stream.close()
    raise DataError(f"{path}: Fortran-ordered array, not written by dopamine")
  return stream._replace(shape=tuple(shape), dtype=dtype)


def read_rows(stream: ArrayStream, out: np.ndarray) -> None:
  """Reads the next `len(out)` rows of `stream` into `out` (same dtype and row shape)."""
  view = memoryview(out.reshape(-1).view(np.uint8))
  got = 0
  try:
    while got < len(view):
      n = stream.file.readinto(view[got:])
      if not n:
        break
      got += n
  except (OSError, EOFError, zlib.error) as e:
    raise DataError(f"{stream.path}: corrupt gzip data ({type(e).__name__}: {e})") from e
  if got != len(view):
    raise DataError(f"{stream.path}: truncated (expected {len(view)} more bytes, got {got})")


def finish(stream: ArrayStream) -> None:
  """Checks that `stream` ends exactly here (gzip CRC verified) and closes it."""
  try:
    extra = stream.file.read(1)
  except (OSError, EOFError, zlib.error) as e:
    raise DataError(f"{stream.path}: corrupt gzip data ({type(e).__name__}: {e})") from e
  finally:
    stream.close()
  if extra:
    raise DataError(f"{stream.path}: trailing bytes after the array")


def load_array(path: str) -> np.ndarray:
  """Loads a whole (small) gzip-wrapped `.npy` file with `allow_pickle=False` semantics."""
  stream = open_array(path)
  out = np.empty(stream.shape, stream.dtype)
  read_rows(stream, out)
  finish(stream)
  return out


def stream_rows(path: str, rows_per_read: int = 16384) -> Iterator[np.ndarray]:
  """Yields successive row blocks of a large gzip `.npy` file with bounded memory.

  Args:
    path: file name.
    rows_per_read: rows per yielded block (the block buffer is reused: copy to keep it).

  Yields:
    Arrays [r, ...] with r <= rows_per_read, in file order.
  """
  stream = open_array(path)
  num_rows = stream.shape[0] if stream.shape else 0
  buf = np.empty((min(rows_per_read, max(num_rows, 1)),) + stream.shape[1:], stream.dtype)
  try:
    for start in range(0, num_rows, len(buf)):
      block = buf[: min(len(buf), num_rows - start)]
      read_rows(stream, block)
      yield block
  except BaseException:
    stream.close()
    raise
  finish(stream)


# --------------------------------------------------------------------------------------------------
# Validation of one suffix.


class SuffixInfo(NamedTuple):
  """What the small files of one suffix say, validated.

  Attributes:
    capacity: C, rows in each array.
    add_count: rows ever added to the buffer (padding included).
    action: int32 [C] in buffer order.
    reward: float32 [C] in buffer order, clipped to [-1, 1].
    terminal: uint8 [C] in buffer order.
  """

  capacity: int
  add_count: int
  action: np.ndarray
  reward: np.ndarray
  terminal: np.ndarray


def _check_vector(path: str, array: np.ndarray, kinds: str, capacity: int) -> None:
  if array.dtype.kind not in kinds:
    raise DataError(f"{path}: wrong dtype {array.dtype} (expected kind {kinds!r})")
  if array.shape != (capacity,):
    raise DataError(f"{path}: wrong shape {array.shape} (expected ({capacity},))")


def check_actions(path: str, action: np.ndarray, game: str | None) -> None:
  """Checks that actions index `game`'s minimal action set, as DQN Replay actions do.

  Another game's data under this game's name would otherwise pass: its actions would index
  Q-values that do not exist (and make the CQL term huge).

  Args:
    path: the file (or source) the actions come from, for the message.
    action: integer [N].
    game: a game of `scaled_ql.games`; None bounds actions by ALE's full set (18) only.

  Raises:
    DataError: naming `path`, the first offending action, the game and its action count.
  """
  num_actions = games.MAX_NUM_ACTIONS if game is None else games.num_actions(game)
  bad = np.flatnonzero((action < 0) | (action >= num_actions))
  if not len(bad):
    return
  value, limits = int(action[bad[0]]), f"{num_actions} actions (0..{num_actions - 1})"
  if game is None:
    raise DataError(f"{path}: action {value} is outside ALE's {limits}")
  raise DataError(
    f"{path}: action {value} is outside {game}'s {limits}: is this another game's data?"
  )


def read_suffix_info(directory: str, suffix: int, game: str | None = None) -> SuffixInfo:
  """Validates one suffix's files (headers of all, contents of the small ones).

  Args:
    directory: a `replay_logs` directory.
    suffix: the checkpoint number k.
    game: the game the data is of, if known: actions are checked against its action set.

  Returns:
    The validated small arrays; observation is only header-checked (use `stream_rows`).

  Raises:
    DataError: naming the file, for a missing file, wrong dtype/shape, pickle, corrupt or truncated
      gzip, NaN or out-of-range rewards or actions, or an add_count inconsistent with the arrays.
  """
  for name in REQUIRED_FILES:
    path = filename(directory, name, suffix)
    if not epath.Path(path).exists():
      raise DataError(f"{path}: file missing (suffix {suffix} of {directory} is incomplete)")
  obs_path = filename(directory, STORE_PREFIX + "observation", suffix)
  stream = open_array(obs_path)
  stream.close()
  if stream.dtype != np.uint8 or len(stream.shape) != 3 or stream.shape[1:] != FRAME_SHAPE:
    raise DataError(
      f"{obs_path}: wrong dtype/shape {stream.dtype} {stream.shape} (expected uint8 [C, 84, 84])"
    )
  capacity = stream.shape[0]
  arrays = {}
  for name, kinds in (("action", "iu"), ("reward", "f"), ("terminal", "biu")):
    path = filename(directory, STORE_PREFIX + name, suffix)
    arrays[name] = load_array(path)
    _check_vector(path, arrays[name], kinds, capacity)
  path = filename(directory, "add_count", suffix)
  add_count = load_array(path)
  if add_count.shape != () or add_count.dtype.kind not in "iu":
    raise DataError(
      f"{path}: add_count must be a 0-d integer, got {add_count.dtype} {add_count.shape}"
    )
  add_count = int(add_count)
  if add_count <= 0:
    raise DataError(f"{path}: add_count {add_count} <= 0: the buffer holds no transitions")
  load_array(filename(directory, "invalid_range", suffix))
  # Rows past add_count of a buffer that never filled were never written (np.empty): skip them.
  written = slice(0, min(add_count, capacity))
  reward_path = filename(directory, STORE_PREFIX + "reward", suffix)
  reward = arrays["reward"].astype(np.float32)
  reward[min(add_count, capacity) :] = 0.0
  if not np.isfinite(reward).all():
    raise DataError(f"{reward_path}: {np.sum(~np.isfinite(reward))} NaN/inf rewards")
  if np.abs(reward).max(initial=0) > 1.0:
    raise DataError(f"{reward_path}: rewards outside [-1, 1] (the data stores clipped rewards)")
  action = arrays["action"]
  check_actions(filename(directory, STORE_PREFIX + "action", suffix), action[written], game)
  return SuffixInfo(
    capacity, add_count, action.astype(np.int32), reward, arrays["terminal"].astype(np.uint8)
  )


def time_order(capacity: int, add_count: int) -> tuple[int, int]:
  """Returns `(start, num_rows)`: row `start` is the oldest, rows run circularly from there."""
  if add_count < capacity:
    return 0, add_count
  return add_count % capacity, capacity


# --------------------------------------------------------------------------------------------------
# Writing (used by data_prep.collect; the same bytes dopamine's `save` writes).


def write_npy_gz(path: str, array: np.ndarray) -> None:
  """Writes `array` as a gzip-wrapped `.npy` file (no pickles), like dopamine's `save`."""
  with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as f:
    np.save(f, array, allow_pickle=False)


def write_npy_gz_atomically(path: str, array: np.ndarray) -> None:
  """`write_npy_gz` through a `*.tmp-{pid}` file renamed at the end: a kill leaves no torn file."""
  tmp = f"{path}.tmp-{os.getpid()}"
  write_npy_gz(tmp, array)
  os.replace(tmp, path)


class SuffixStreamWriter:
  """Writes one suffix whose rows arrive in buffer order, with bounded memory.

  Observation rows are compressed as they arrive (`append`); the small arrays are kept (9 bytes a
  row) and written by `commit`, which renames every file into place, `add_count` last. Until then
  only `*.tmp-*` files exist, so an interrupted write never looks like a complete suffix.
  """

  def __init__(self, directory: str, suffix: int, capacity: int):
    os.makedirs(directory, exist_ok=True)
    self.directory, self.suffix, self.capacity = directory, suffix, capacity
    stale = filename(directory, "add_count", suffix)
    if os.path.exists(stale):
      os.remove(stale)
    self._obs_final = filename(directory, STORE_PREFIX + "observation", suffix)
    self._obs_tmp = f"{self._obs_final}.tmp-{os.getpid()}"
    self._raw = open(self._obs_tmp, "wb")
    self._gz = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=1)
    header = {"descr": "|u1", "fortran_order": False, "shape": (capacity,) + FRAME_SHAPE}
    np.lib.format.write_array_header_1_0(self._gz, header)
    self.num_rows = 0

  def append(self, frames: np.ndarray) -> None:
    """Appends uint8 [r, 84, 84] observation rows."""
    if frames.shape[1:] != FRAME_SHAPE or frames.dtype != np.uint8:
      raise ValueError(f"frames must be uint8 [r, 84, 84], got {frames.dtype} {frames.shape}")
    if self.num_rows + len(frames) > self.capacity:
      raise ValueError(f"suffix {self.suffix}: more than {self.capacity} rows")
    self._gz.write(np.ascontiguousarray(frames).tobytes())
    self.num_rows += len(frames)

  def commit(self, action, reward, terminal, add_count: int) -> None:
    """Writes the small arrays ([capacity] each) and renames everything into place."""
    if self.num_rows != self.capacity:
      raise ValueError(f"suffix {self.suffix}: {self.num_rows} rows appended, need {self.capacity}")
    self._gz.close()
    self._raw.close()
    os.replace(self._obs_tmp, self._obs_final)
    items = {
      STORE_PREFIX + "action": np.asarray(action, np.int32),
      STORE_PREFIX + "reward": np.asarray(reward, np.float32),
      STORE_PREFIX + "terminal": np.asarray(terminal, np.uint8),
      "invalid_range": np.zeros(STACK_SIZE, np.float64),
      "add_count": np.array(add_count, np.int64),
    }
    for name, array in items.items():
      write_npy_gz_atomically(filename(self.directory, name, self.suffix), array)

  def abort(self) -> None:
    self._gz.close()
    self._raw.close()
    os.remove(self._obs_tmp)


# Our collector also logs each episode's unclipped score beside `replay_logs/` (the DQN Replay
# files hold clipped rewards only): `{root}/{Game}/{run}/episodes.csv`.
EPISODES_FILE = "episodes.csv"


def read_episode_returns(root: str, game: str) -> dict[int, np.ndarray]:
  """Unclipped scores of the episodes our collector logged for `game` (all runs), by suffix.

  Returns:
    {checkpoint suffix: float [E_k]}: the episodes whose first row is in that checkpoint
    (each played at that checkpoint's behaviour), so a schedule of behaviour quality shows
    as one mean per checkpoint. Empty when no logged episode has ended yet.

  Raises:
    DataError: no run of `game` under `root` has an episodes log (real DQN Replay data has
      none: its scores are only in the original agents' logs).
  """
  paths = sorted(epath.Path(root, game).glob(f"*/{EPISODES_FILE}"))
  if not paths:
    raise DataError(
      f"no {EPISODES_FILE} under {os.path.join(root, game)}: only data made by "
      "`python -m data_prep.collect` logs episode scores"
    )
  returns = collections.defaultdict(list)
  for path in paths:
    with path.open() as f:
      for row in csv.DictReader(f):
        returns[int(row["suffix"])].append(float(row["return"]))
  return {suffix: np.asarray(returns[suffix]) for suffix in sorted(returns)}
