"""The sampler's in-memory pool: slots holding chunks of consecutive rows as 4-frame stacks.

Slot `s` holds, at step `t`, the chunk drawn by `rng(seed, process_index, s, generation)` with
`generation = (t + phase_s) // slot_lifetime_steps`; phases are staggered so that a few slots
change every step. What a slot holds is thus a function of (seed, process, slot, step) only.
Each slot points at one of `num_slots + num_spare` physical buffers; chunks that the next
`lookahead_steps` steps will need are read and stacked into spare buffers by background threads
and swapped in when their step comes, so disk reads and stacking stay off the critical path.
"""

import concurrent.futures
import mmap
import threading
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from scaled_ql.data import dqn_replay, episodes, shards
from scaled_ql.data.transitions import STACK, read_chunk, stack_frames_into


class EpisodeSelection(NamedTuple):
  """What the pool keeps of whole episodes (see `episodes.py`).

  Attributes:
    indices: [game][segment] `episodes.EpisodeIndex`.
    kept: [game][segment] bool [E], the episodes whose states are sampled (filtered BC,
      `episodes.top_episodes`); None keeps every episode.
    windows: keep each loaded row's action, reward, return-to-go, terminal and padding flag
      (for `WindowBatch`es), and sample only states whose return-to-go is known.
  """

  indices: Sequence[Sequence[episodes.EpisodeIndex]]
  kept: Sequence[Sequence[np.ndarray]] | None
  windows: bool


class ChunkPool:
  """Physical buffers, the slot -> buffer map, and the loads that fill them."""

  def __init__(
    self,
    game_names: Sequence[str],
    segments: Sequence[Sequence[shards.Segment]],
    chunks: Sequence[Sequence[tuple[int, int, int]]],
    chunk_sizes: Sequence[np.ndarray],
    slots_per_game: int,
    chunk_rows: int,
    slot_lifetime_steps: int,
    n_step: int,
    gamma: float,
    seed: int,
    process_index: int,
    num_io_threads: int = 4,
    lookahead_steps: int = 16,
    selection: EpisodeSelection | None = None,
  ):
    self.game_names, self._segments, self._chunks = game_names, segments, chunks
    # Chunks are drawn in proportion to their size: their rows, or with an episode selection
    # their rows in selected episodes (see sampler.py).
    self._chunk_sizes = chunk_sizes
    self._chunk_p = [sizes / sizes.sum() for sizes in chunk_sizes]
    self.slots_per_game, self.slot_lifetime_steps = slots_per_game, slot_lifetime_steps
    self.n_step, self.gamma, self.seed, self.process_index = n_step, gamma, seed, process_index
    self.num_slots = slots_per_game * len(game_names)
    self.lookahead_steps = min(lookahead_steps, slot_lifetime_steps - 1)
    changes = self.num_slots * max(1, self.lookahead_steps) / slot_lifetime_steps
    num_spare = int(min(self.num_slots, max(2, 2 * np.ceil(changes))))
    num_buffers = self.num_slots + num_spare
    self._loaded_rows = chunk_rows + STACK - 1 + n_step
    # Buffer b holds 4-frame stacks, newest last: stacks[b, j] stacks loaded rows j..j+3 (the
    # state at loaded row j+3). Stacking at load time makes a batch a copy of contiguous 28 KB
    # blocks: 4x the memory per row, several times faster than interleaving frames per batch.
    shape = (num_buffers, chunk_rows + n_step, 84, 84, STACK)
    self._map = mmap.mmap(-1, int(np.prod(shape)))
    if hasattr(mmap, "MADV_HUGEPAGE"):  # faster first touch, fewer TLB misses in gathers
      self._map.madvise(mmap.MADV_HUGEPAGE)
    self.stacks = np.frombuffer(self._map, np.uint8).reshape(shape)
    self.valid = np.zeros((num_buffers, chunk_rows), np.int32)  # loaded-row index of states
    self.ret = np.zeros((num_buffers, chunk_rows), np.float32)
    self.discount = np.zeros((num_buffers, chunk_rows), np.float32)
    self.length = np.zeros((num_buffers, chunk_rows), np.int32)
    self.action = np.zeros((num_buffers, chunk_rows), np.int32)
    self.num_valid = np.zeros(num_buffers, np.int64)
    self._selection = selection
    if selection is not None and selection.windows:  # per loaded row, for windowed batches
      rows = (num_buffers, self._loaded_rows)
      self.row_action, self.row_reward = np.zeros(rows, np.int32), np.zeros(rows, np.float32)
      self.row_return_to_go = np.zeros(rows, np.float32)
      self.row_terminal, self.row_padding = np.zeros(rows, bool), np.zeros(rows, bool)
    # Valid states / rows of the chunk held: the weight of its slot (see sampler.py).
    self.valid_fraction = np.zeros(num_buffers, np.float64)
    self.buffer_of_slot = np.arange(self.num_slots)
    self._held = np.full(self.num_slots, -1, np.int64)  # generation held by each slot
    self._free = list(range(self.num_slots, num_buffers))
    self._pending: dict[int, tuple[int, int, concurrent.futures.Future]] = {}
    self._phase = np.arange(self.num_slots) * slot_lifetime_steps // self.num_slots
    self._local = threading.local()
    self._readers, self._lock = [], threading.Lock()
    self._io = concurrent.futures.ThreadPoolExecutor(num_io_threads, "replay-io")

  @property
  def nbytes(self) -> int:
    return self.stacks.nbytes

  def generations(self, step: int) -> np.ndarray:
    """int64 [num_slots]: the generation every slot holds at `step`."""
    return (step + self._phase) // self.slot_lifetime_steps

  # ------------------------------------------------------------------------------------------------
  # Loading one chunk (runs in I/O threads).

  def _thread_state(self):
    local = self._local
    if not hasattr(local, "reader"):
      local.reader = shards.RowReader()
      local.frames = np.empty((self._loaded_rows, 84, 84), np.uint8)
      with self._lock:
        self._readers.append(local.reader)
    return local.reader, local.frames

  def _load(self, buffer: int, slot: int, generation: int) -> None:
    """Fills `buffer` with slot's chunk for `generation` (skipping chunks with no valid state)."""
    game = slot // self.slots_per_game
    rng = np.random.default_rng([self.seed, self.process_index, slot, generation, 0x51])
    chunks = self._chunks[game]
    first = int(rng.choice(len(chunks), p=self._chunk_p[game]))
    reader, frames = self._thread_state()
    for attempt in range(len(chunks)):
      index = (first + attempt) % len(chunks)
      seg_i, lo, hi = chunks[index]
      segment = self._segments[game][seg_i]
      valid, ret, discount, length, action = read_chunk(
        reader, segment, lo, hi, self.n_step, self.gamma, frames
      )
      facts = None
      if self._selection is not None:
        facts = episodes.ChunkEpisodes(
          reader, segment, self._selection.indices[game][seg_i], max(0, lo - (STACK - 1)),
          len(action),
        )  # fmt: skip
        keep = self._keep(game, seg_i, facts, valid)
        valid, ret, discount, length = valid[keep], ret[keep], discount[keep], length[keep]
      if len(valid):
        break
    else:
      raise dqn_replay.DataError(
        f"{self.game_names[game]}: no valid transitions in this host's data"
        + ("" if self._selection is None else " (after the episode selection)")
      )
    # Shards converted before convert checked actions against the game: check them here too.
    where = ", ".join(part.directory for part in segment.parts)
    dqn_replay.check_actions(where, action[valid], self.game_names[game])
    stack_frames_into(frames[: len(action)], self.stacks[buffer, : len(action) - (STACK - 1)])
    v = len(valid)
    self.valid[buffer, :v], self.ret[buffer, :v] = valid, ret
    self.discount[buffer, :v], self.length[buffer, :v] = discount, length
    self.action[buffer, :v] = action[valid]
    self.num_valid[buffer] = v
    self.valid_fraction[buffer] = v / self._chunk_sizes[game][index]
    if facts is not None and self._selection.windows:
      n = len(action)
      self.row_action[buffer, :n], self.row_reward[buffer, :n] = action, facts.reward
      self.row_return_to_go[buffer, :n] = facts.return_to_go
      self.row_terminal[buffer, :n], self.row_padding[buffer, :n] = facts.terminal, facts.padding

  def _keep(
    self, game: int, segment: int, facts: episodes.ChunkEpisodes, valid: np.ndarray
  ) -> np.ndarray:
    """bool [V]: the valid states the episode selection keeps."""
    keep = np.ones(len(valid), bool)
    if self._selection.windows:
      keep &= facts.known[valid]
    if self._selection.kept is not None:  # episode E (unended) is never kept
      keep &= np.append(self._selection.kept[game][segment], False)[facts.episode[valid]]
    return keep

  # ------------------------------------------------------------------------------------------------
  # Keeping slots current (called by the one thread that makes batches).

  def _swap_in(self, slot: int, buffer: int, generation: int) -> None:
    self._free.append(int(self.buffer_of_slot[slot]))
    self.buffer_of_slot[slot] = buffer
    self._held[slot] = generation

  def ensure(self, slots: np.ndarray, step: int) -> None:
    """Makes every slot in `slots` hold its chunk for `step`, waiting for loads if needed."""
    wanted = self.generations(step)
    in_place = []
    for slot in slots[self._held[slots] != wanted[slots]]:
      pending = self._pending.pop(int(slot), None)
      if pending is not None:
        generation, buffer, future = pending
        future.result()
        if generation == wanted[slot]:
          self._swap_in(slot, buffer, generation)
          continue
        self._free.append(buffer)  # prefetched for another step (after a jump): discard
      in_place.append(slot)
    futures = [self._io.submit(self._load, self.buffer_of_slot[s], s, wanted[s]) for s in in_place]
    for future in futures:
      future.result()
    self._held[in_place] = wanted[in_place]

  def prefetch(self, step: int) -> None:
    """Starts loading the chunks that slots will need within `lookahead_steps` after `step`."""
    ahead = self.generations(step + self.lookahead_steps)
    for slot in np.flatnonzero(ahead != self._held):
      if not self._free:
        return
      if int(slot) in self._pending or self._held[slot] < 0:
        continue
      buffer = self._free.pop()
      future = self._io.submit(self._load, buffer, slot, ahead[slot])
      self._pending[int(slot)] = (int(ahead[slot]), buffer, future)

  def close(self) -> None:
    self._io.shutdown(wait=True)
    for reader in self._readers:
      reader.close()
