"""Multi-game n-step batches from converted shards, memory-bounded, deterministic and resumable.

How it samples. Each game's data is cut into chunks of `chunk_rows` consecutive rows; this host
owns every `process_count`-th chunk (per-host sharding, disjoint). A pool (`pool.py`) of
`slots_per_game` slots per game holds one chunk each as 4-frame stacks, preallocated: about
`pool_rows * 28 KB` (0.9 GB by default), the only large memory whatever the dataset size. What a
slot holds at step `t` is drawn from `rng(seed, process_index, slot, generation(t))`, chunks being
drawn in proportion to their rows; a slot is refilled every `slot_lifetime_steps`, staggered, so
that each loaded row is sampled `sample_reuse` times on average (default 4). A batch at step `t`
draws from `rng(seed, process_index, t)` a game per example (by `game_weights`, equal shares by
default), then a slot of that game with probability proportional to its chunk's valid fraction
`V_c / R_c` (valid states / rows: the padding rows after a terminal and the first and last rows
of a segment are not valid states), then a valid state of that chunk uniformly. Given the pool,
a valid state of chunk `c` is thus drawn with probability `n_c / (R_c * Z)` (`n_c`: the game's
slots holding `c`; `Z`: the sum of their valid fractions); as chunks enter slots in proportion to
their rows, `E[n_c] / R_c` is the same for every chunk, so every valid state of a game is equally
likely, up to `Z`'s small fluctuations between pools (uniform slots would over-sample the states
of chunks with many invalid rows, i.e. of short episodes). So `batch(step)` is a pure function of
(data, seed, step, process_index): resuming is "continue from step".

This is the trade batch_rl's FixedReplayBuffer makes with 5 whole 1M-row files per iteration
(35 GB of RAM): samples come from a subset of the data that turns over. Here the subset is
`num_games * slots_per_game` places spread over all files at once, and it turns over continuously.
Transitions are dopamine's (see `transitions.py`), checked against dopamine in the tests.
"""

import ctypes
import queue
import threading
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np

from scaled_ql.data import episodes, shards
from scaled_ql.data.dqn_replay import DataError
from scaled_ql.data.pool import ChunkPool, EpisodeSelection
from scaled_ql.data.source import DataSource
from scaled_ql.data.transitions import STACK, read_chunk, stack_frames
from scaled_ql.types import Batch, WindowBatch


class Locality(NamedTuple):
  """How the samples of one game are spread, on one host (see `game_locality`).

  Attributes:
    rows_in_memory: the game's rows held in the pool at a time (slots x chunk_rows).
    slots: the game's slots, i.e. the distinct chunks it holds at a time (fewer when two slots
      drew the same chunk: rare when the host has many more chunks of the game than slots).
    chunk_rows: consecutive rows per chunk.
    samples_per_batch: expected samples of the game in one batch (B x its weight).
    distinct_chunks_per_batch: expected number of distinct chunks those samples come from.
    slot_lifetime_steps: steps a slot keeps its chunk.
    reuse_per_row: expected samples of a loaded row before its slot is refilled.
  """

  rows_in_memory: int
  slots: int
  chunk_rows: int
  samples_per_batch: float
  distinct_chunks_per_batch: float
  slot_lifetime_steps: int
  reuse_per_row: float


def expected_distinct(num_draws: int, p: float | np.ndarray) -> float:
  """Expected number of places hit by `num_draws` independent draws.

  Args:
    num_draws: independent draws.
    p: [P] probability that one draw hits place i (the draw may hit none: sum(p) <= 1).

  Returns:
    sum_i 1 - (1 - p_i)^num_draws. For a fixed total, equal p_i give the most.
  """
  return float(np.sum(1.0 - (1.0 - np.asarray(p, float)) ** num_draws))


def game_locality(
  local_batch_size: int,
  game_weight: float,
  slots_per_game: int,
  chunk_rows: int,
  slot_lifetime_steps: int,
) -> Locality:
  """The a-priori locality of one game's samples (the sampler's rule, module docstring).

  Each of a batch's B examples is the game's with probability w, then from one of its S slots,
  uniformly up to the slots' valid fractions: a batch hits a given slot with probability
  1 - (1 - w/S)^B. The distinct chunks per batch are an upper bound: unequal valid fractions
  and two slots holding the same chunk make them fewer (`expected_distinct` of the actual
  probabilities gives the exact figure for a given pool).
  """
  b, w, s = local_batch_size, float(game_weight), slots_per_game
  return Locality(
    rows_in_memory=s * chunk_rows,
    slots=s,
    chunk_rows=chunk_rows,
    samples_per_batch=b * w,
    distinct_chunks_per_batch=expected_distinct(b, np.full(s, w / s)),
    slot_lifetime_steps=slot_lifetime_steps,
    reuse_per_row=slot_lifetime_steps * b * w / (s * chunk_rows),
  )


def _keep_freed_batches_in_the_heap() -> None:
  """Asks glibc to reuse freed batch arrays instead of returning them to the OS.

  A batch is two 14 MB arrays; by default glibc maps and unmaps each, and the fresh pages'
  faults cost more than the copy itself (1.5x throughput on this machine). Freed memory stays
  in the heap up to 512 MB.
  """
  try:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 256 << 20)  # M_MMAP_THRESHOLD: allocations below 256 MB come from the heap
    libc.mallopt(-1, 512 << 20)  # M_TRIM_THRESHOLD: keep up to 512 MB of free heap
  except (OSError, AttributeError):  # not glibc: nothing to tune
    pass


class ReplayDataset(DataSource):
  """Samples `Batch`es for one host from converted DQN Replay shards of several games.

  `batch(step)` and `iterate(start_step)` are the API; call one of them from one thread at a time
  (`iterate` runs `batch` in its own background thread).
  """

  def __init__(
    self,
    shard_dir: str,
    game_names: Sequence[str],
    runs: Sequence[int] | str = (1,),
    suffixes: str | Sequence[int] = "all",
    n_step: int = 3,
    gamma: float = 0.99,
    game_weights: Sequence[float] | None = None,
    seed: int = 0,
    local_batch_size: int = 512,
    process_index: int = 0,
    process_count: int = 1,
    row_fraction: float = 1.0,
    pool_rows: int = 32768,
    chunk_rows: int | None = None,
    sample_reuse: float = 4.0,
    num_io_threads: int = 4,
    windows: bool = False,
    top_episode_fraction: float = 1.0,
  ):
    """Indexes the selected data; chunks are loaded on first use.

    It reads only metadata, and with `windows` or `top_episode_fraction` < 1 also every
    selected segment's reward and terminal arrays (5 bytes a row), to index its episodes.

    Args:
      shard_dir: output of `python -m data_prep.convert`.
      game_names: games, e.g. ["Breakout", "Pong"]; `game_id` is the index in this list.
      runs: DQN Replay runs (ints, or "1-5").
      suffixes: "all", "first20" (suffixes 0..9), "0-4,9" or ints.
      n_step, gamma: return horizon and discount.
      game_weights: per-game sampling weights (normalised); equal shares by default.
      seed: sampling seed.
      local_batch_size: examples per batch on this host.
      process_index, process_count: this host's share (disjoint chunks per host).
      row_fraction: fraction of each suffix's rows used (see `shards.find_segments`).
      pool_rows: rows held in memory across all games (as 4-frame stacks: 28 KB per row).
      chunk_rows: consecutive rows per pool slot; by default 512, or fewer so that every game
        has at least 8 slots (diversity within a batch) when many games share the pool.
      sample_reuse: expected number of samples of each loaded row before its slot is refilled.
      num_io_threads: threads reading chunks.
      windows: make `WindowBatch`es (4 consecutive steps of one episode with returns-to-go,
        for sequence models) instead of n-step `Batch`es; only states whose episode ends in
        the selected data are sampled (their return-to-go is known).
      top_episode_fraction: sample only the states of each game's best episodes by return
        that fill this fraction of its rows (filtered BC, `episodes.top_episodes`); 1 keeps
        all. Only episodes that start and end inside the selected data count (the others'
        returns are unknown).
    """
    if n_step < 1:
      raise ValueError(f"n_step must be >= 1, got {n_step}")
    if not 0.0 < top_episode_fraction <= 1.0:
      raise ValueError(f"top_episode_fraction must be in (0, 1], got {top_episode_fraction}")
    self.game_names = list(game_names)
    self.n_step, self.gamma, self.seed = n_step, gamma, seed
    if chunk_rows is None:
      chunk_rows = min(512, max(32, pool_rows // (8 * len(game_names))))
    self.local_batch_size, self.chunk_rows = local_batch_size, chunk_rows
    self.process_index, self.process_count = process_index, process_count
    weights = (
      np.ones(len(self.game_names)) if game_weights is None else np.asarray(game_weights, float)
    )
    if len(weights) != len(self.game_names) or (weights < 0).any() or weights.sum() <= 0:
      raise ValueError(f"game_weights {game_weights} do not match games {self.game_names}")
    self.game_weights = weights / weights.sum()
    # The paper's two selections (DESIGN.md section 2), for reports.
    if isinstance(suffixes, str):
      self.data_quality = {"all": "near_optimal", "first20": "low_quality"}.get(suffixes)
    runs = shards.parse_runs(runs)
    self.windows, self.top_episode_fraction = windows, top_episode_fraction
    self.kept_episodes = None  # per game, with top_episode_fraction < 1: see `_describe_kept`
    self._segments, self._chunks, self._chunk_sizes = [], [], []
    for game in self.game_names:
      segments = shards.find_segments(shard_dir, game, runs, suffixes, row_fraction)
      chunks = self._host_chunks(game, segments, chunk_rows)
      self._segments.append(segments)
      self._chunks.append(chunks)
      self._chunk_sizes.append(np.array([hi - lo for _, lo, hi in chunks], float))
    selection = self._episode_selection()
    if selection is not None:
      self._keep_selected_chunks(selection)
    # ---- The pool: preallocated once; its size bounds memory whatever the dataset size.
    self.slots_per_game = max(2, pool_rows // (chunk_rows * len(self.game_names)))
    num_slots = self.slots_per_game * len(self.game_names)
    self.slot_lifetime_steps = max(
      2, round(sample_reuse * num_slots * chunk_rows / local_batch_size)
    )
    self._pool = ChunkPool(
      self.game_names,
      self._segments,
      self._chunks,
      self._chunk_sizes,
      self.slots_per_game,
      chunk_rows,
      self.slot_lifetime_steps,
      n_step,
      gamma,
      seed,
      process_index,
      num_io_threads,
      selection=selection,
    )
    _keep_freed_batches_in_the_heap()

  def _episode_selection(self) -> EpisodeSelection | None:
    """Indexes every selected segment's episodes when windows or a return filter need them."""
    filtered = self.top_episode_fraction < 1.0
    if not (self.windows or filtered):
      return None
    reader = shards.RowReader()
    try:
      indices = [[episodes.index_segment(reader, s) for s in segs] for segs in self._segments]
    finally:
      reader.close()
    kept = None
    if filtered:
      kept = []
      for game, game_indices in zip(self.game_names, indices, strict=True):
        try:
          kept.append(episodes.top_episodes(game_indices, self.top_episode_fraction))
        except ValueError as e:
          raise ValueError(f"{game}: {e}") from None
      self._episode_indices, self.kept_episodes = indices, kept
    return EpisodeSelection(indices, kept, self.windows)

  def _keep_selected_chunks(self, selection: EpisodeSelection) -> None:
    """Weighs chunks by their rows in selected episodes and drops those with none.

    Slots then hold chunks in proportion to their selected rows and weigh them by their valid
    states per selected row, so every selected state stays equally likely (the argument of
    the module docstring with R_c = the chunk's selected rows).
    """
    for g, game in enumerate(self.game_names):
      kept = [None] * len(selection.indices[g]) if selection.kept is None else selection.kept[g]
      counts = [  # [num_rows + 1] cumulative selected rows of each segment
        np.concatenate([[0], np.cumsum(episodes.selected_rows(index, segment_kept))])
        for index, segment_kept in zip(selection.indices[g], kept, strict=True)
      ]
      sizes = np.array([counts[s][hi] - counts[s][lo] for s, lo, hi in self._chunks[g]], float)
      if not sizes.any():
        raise DataError(f"{game}: no row of a selected episode among this host's chunks")
      self._chunks[g] = [c for c, size in zip(self._chunks[g], sizes, strict=True) if size]
      self._chunk_sizes[g] = sizes[sizes > 0]

  def _host_chunks(self, game, segments, chunk_rows) -> list[tuple[int, int, int]]:
    """Returns this host's chunks (segment index, first row, end row) of one game."""
    chunks = [
      (s, lo, min(lo + chunk_rows, seg.num_rows))
      for s, seg in enumerate(segments)
      for lo in range(0, seg.num_rows, chunk_rows)
    ]
    if len(chunks) < self.process_count:
      raise ValueError(
        f"{game}: {len(chunks)} chunks cannot be split over {self.process_count} processes; "
        "lower chunk_rows or select more data"
      )
    order = np.random.default_rng(12345).permutation(len(chunks))  # fixed: a property of the data
    return [chunks[i] for i in sorted(order[self.process_index :: self.process_count])]

  def transitions_at(self, game_id: int, segment_index: int, rows: np.ndarray) -> Batch:
    """Returns the transitions whose states are at the given segment rows (for tests and tools).

    Reads the whole segment into fresh memory: meant for small data.

    Raises:
      ValueError: if a row is not a valid state.
    """
    segment = self._segments[game_id][segment_index]
    n = segment.num_rows
    obs = np.empty((n, 84, 84), np.uint8)
    valid, ret, discount, length, action = read_chunk(
      shards.RowReader(), segment, 0, n, self.n_step, self.gamma, obs
    )
    where = np.searchsorted(valid, rows)
    if (where >= len(valid)).any() or (valid[np.minimum(where, len(valid) - 1)] != rows).any():
      raise ValueError(f"rows {sorted(set(rows) - set(valid))} are not valid states")
    next_rows = rows + length[where]
    return Batch(
      obs=stack_frames([obs[rows - j] for j in range(STACK - 1, -1, -1)]),
      action=action[rows],
      reward=ret[where],
      discount=discount[where],
      next_obs=stack_frames([obs[next_rows - j] for j in range(STACK - 1, -1, -1)]),
      game_id=np.full(len(rows), game_id, np.int32),
    )

  def valid_rows(self, game_id: int, segment_index: int) -> np.ndarray:
    """Returns the segment rows that are valid states (int32 [V]), for tests and tools."""
    segment = self._segments[game_id][segment_index]
    obs = np.empty((segment.num_rows, 84, 84), np.uint8)
    return read_chunk(
      shards.RowReader(), segment, 0, segment.num_rows, self.n_step, self.gamma, obs
    )[0]

  # ------------------------------------------------------------------------------------------------
  # Batches.

  def batch(self, step: int) -> Batch | WindowBatch:
    """Returns the batch for `step`: a pure function of (data, seed, step, process_index).

    Returns:
      Batch with obs/next_obs uint8 [B, 84, 84, 4], action int32 [B], reward float32 [B],
      discount float32 [B], game_id int32 [B]; B = local_batch_size. With `windows`, a
      WindowBatch of the windows ending at the same states.
    """
    game_id, buffer, k = self._draw(step)
    pool = self._pool
    row = pool.valid[buffer, k].astype(np.int64)  # [B] loaded-row index of s_t
    if self.windows:
      steps = row[:, None] + np.arange(-(STACK - 1), 1)  # [B, T] loaded rows of the window
      batch = WindowBatch(
        obs=pool.stacks[buffer, row - (STACK - 1)],  # [B, 84, 84, T]: frame k = step k
        action=pool.row_action[buffer[:, None], steps],
        reward=pool.row_reward[buffer[:, None], steps],
        return_to_go=pool.row_return_to_go[buffer[:, None], steps],
        terminal=pool.row_terminal[buffer[:, None], steps],
        padding=pool.row_padding[buffer[:, None], steps],
        game_id=game_id,
      )
    else:
      next_row = row + pool.length[buffer, k]  # [B] loaded-row index of s_{t+len}
      batch = Batch(
        obs=pool.stacks[buffer, row - (STACK - 1)],  # [B, 84, 84, 4]
        action=pool.action[buffer, k],
        reward=pool.ret[buffer, k],
        discount=pool.discount[buffer, k],
        next_obs=pool.stacks[buffer, next_row - (STACK - 1)],  # [B, 84, 84, 4]
        game_id=game_id,
      )
    pool.prefetch(step)
    return batch

  def _draw(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The examples of `step`: (game_id int32 [B], pool buffer [B], index of a valid state
    in the buffer [B])."""
    b, num_slots = self.local_batch_size, self.slots_per_game
    rng = np.random.default_rng([self.seed, self.process_index, step, 0xBA])
    game_id = rng.choice(len(self.game_names), size=b, p=self.game_weights).astype(np.int32)
    u_slot, u = rng.random(b), rng.random(b)
    pool = self._pool
    # ---- A slot of the example's game, by its chunk's valid fraction (see the module docstring):
    # every slot of the games drawn must be current to weigh them.
    games, game_index = np.unique(game_id, return_inverse=True)
    slots = games[:, None] * num_slots + np.arange(num_slots)  # [G', S], G' games drawn
    pool.ensure(slots.ravel(), step)
    cdf = np.cumsum(pool.valid_fraction[pool.buffer_of_slot[slots]], axis=1)  # [G', S]
    cdf /= cdf[:, -1:]  # the last entry is exactly 1 > u_slot: the count below stays < S
    slot = slots[game_index, np.sum(cdf[game_index] <= u_slot[:, None], axis=1)]  # [B]
    # ---- A valid state of the slot's chunk, uniformly.
    buffer = pool.buffer_of_slot[slot]  # [B]
    num_valid = pool.num_valid[buffer]
    k = np.minimum((u * num_valid).astype(np.int64), num_valid - 1)  # [B] index of a valid state
    return game_id, buffer, k

  def iterate(self, start_step: int, current_policy=None, prefetch: int = 2) -> Iterator[Batch]:
    """Yields `batch(start_step)`, `batch(start_step + 1)`, ... computed in a background thread.

    Args:
      start_step: first step (the trainer's restored step when resuming).
      current_policy: unused (offline data does not act).
      prefetch: batches computed ahead.
    """
    out: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    stop = threading.Event()

    def produce():
      step = start_step
      try:
        while not stop.is_set():
          item = self.batch(step)
          while not stop.is_set():
            try:
              out.put(item, timeout=0.1)
              break
            except queue.Full:
              continue
          step += 1
      except BaseException as e:  # surfaced in the consumer, never a silent hang
        out.put(e)

    thread = threading.Thread(target=produce, daemon=True, name="replay-prefetch")
    thread.start()
    try:
      while True:
        item = out.get()
        if isinstance(item, BaseException):
          raise item
        yield item
    finally:
      stop.set()
      thread.join(timeout=5)

  def close(self) -> None:
    self._pool.close()

  @property
  def pool_bytes(self) -> int:
    """Bytes of the preallocated pool (the sampler's only large memory)."""
    return self._pool.nbytes

  def locality(self) -> list[Locality]:
    """Per game (in `game_names` order): how its samples are spread on this host."""
    return [
      game_locality(
        self.local_batch_size, w, self.slots_per_game, self.chunk_rows, self.slot_lifetime_steps
      )
      for w in self.game_weights
    ]

  def describe(self) -> str:
    """One line for logs: what is sampled and how, and how local the samples are."""
    host_rows = sum(hi - lo for chunks in self._chunks for _, lo, hi in chunks)
    return (
      f"ReplayDataset: {len(self.game_names)} games, {host_rows:,} rows in data shard "
      f"{self.process_index}/{self.process_count}, n={self.n_step}, gamma={self.gamma}; pool "
      f"{self.pool_bytes / 2**30:.2f} GiB, {self._pool.num_slots} slots of {self.chunk_rows} rows "
      f"({self._pool.num_slots * self.chunk_rows / max(1, host_rows):.1%} of the rows at a time); "
      + _describe_locality(self.locality(), self.process_count)
      + (", windows of 4 steps with returns-to-go" if self.windows else "")
      + (
        f", the best episodes filling {self.top_episode_fraction:.0%} of the rows (%BC): "
        + "; ".join(f"{g} {_describe_kept(i, k)}" for g, i, k in
                    zip(self.game_names, self._episode_indices, self.kept_episodes, strict=True))
        if self.kept_episodes
        else ""
      )
    )


def _describe_kept(indices: Sequence[episodes.EpisodeIndex], kept: Sequence[np.ndarray]) -> str:
  """What a %BC selection kept of a game's whole episodes: how many, their rows, returns."""
  returns = np.concatenate([i.returns[k] for i, k in zip(indices, kept, strict=True)])
  whole = sum(max(len(i.ends) - 1, 0) for i in indices)
  rows = sum(int(np.diff(np.append(-1, i.ends))[k].sum())
             for i, k in zip(indices, kept, strict=True))  # fmt: skip
  all_rows = sum(int(i.ends[-1] - i.ends[0]) for i in indices if len(i.ends))
  return (f"kept {len(returns)} of {whole} whole episodes ({rows / max(all_rows, 1):.1%} of their "
          f"rows), returns {returns.min():g} to {returns.max():g}")  # fmt: skip


def _describe_locality(per_game: Sequence[Locality], process_count: int) -> str:
  """`ReplayDataset.describe`'s per-game part; a range where games differ (unequal weights)."""

  def fig(values, fmt):
    lo, hi = min(values), max(values)
    return format(lo, fmt) if format(lo, fmt) == format(hi, fmt) else f"{lo:{fmt}}-{hi:{fmt}}"

  g = per_game[0]
  m = fig([x.samples_per_batch for x in per_game], ".1f")
  d = fig([x.distinct_chunks_per_batch for x in per_game], ".1f")
  text = (
    f"per game {g.rows_in_memory:,} rows in memory = {g.slots} chunks of {g.chunk_rows} "
    f"consecutive rows; a batch's ~{m} samples of a game come from ~{d} distinct chunks"
  )
  if process_count > 1:
    total = fig([process_count * x.distinct_chunks_per_batch for x in per_game], ".1f")
    text += f" (the global batch's from ~{total}: data shards hold disjoint chunks)"
  reuse = fig([x.reuse_per_row for x in per_game], ".2g")
  return text + (
    f"; each slot is refilled every {g.slot_lifetime_steps} steps, a loaded row sampled ~{reuse}x"
  )
