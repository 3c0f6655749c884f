"""`ReplayBuffer`: the in-process replay buffer of online fine-tuning, a trainer `DataSource`.

The acting loop (`scaled_ql.actor`) adds one step of its E environments at a time. Each
environment has its own stream, a ring of `capacity // num_envs` rows in exactly the DQN Replay
row format that `data_prep.collect` writes: (newest frame of the stack the agent acted on, that
action, the clipped reward, terminal = the episode ended after it, time limit included). Every
episode opens with 3 all-zero padding rows, so a state's 4-frame stack is rows i-3..i as in the
files, and transitions follow dopamine's semantics through the data layer's own
`transitions.transition_tables`:

- Row i of a stream is final once rows up to i + n_step exist. Before sampling, each stream's
  newly final states are tabulated as one block (valid, n-step return, discount, length) and the
  results stored at the states' ring slots: tabulation costs O(rows added) in all, a batch
  O(batch).
- Writing a row clears the tables of the state it overwrites and of the 3 states whose stacks
  read it, so a state whose stack rows were overwritten is never sampled; its bootstrap rows are
  newer than the state, hence held while it is.
- Sampling law: uniform over the valid states of all streams. Held slots are drawn uniformly
  with `np.random.default_rng([seed, step])` and invalid ones rejected (exactly uniform over the
  valid ones); each round is sized by the valid fraction, so about one round suffices.
"""

import itertools
from collections.abc import Iterator

import numpy as np

from scaled_ql import types
from scaled_ql.data import source
from scaled_ql.data.transitions import STACK, stack_frames, transition_tables

PAD = STACK - 1  # all-zero rows opening every episode
FRAME_SHAPE = (84, 84)


def _check_int(name: str, value, minimum: int) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"ReplayBuffer: {name} must be an int >= {minimum}, got {value!r}.")


class ReplayBuffer(source.DataSource):
  """The last `capacity` rows of E environments' play, sampled as n-step transitions."""

  def __init__(
    self,
    capacity: int,
    num_envs: int,
    n_step: int = 3,
    gamma: float = 0.99,
    seed: int = 0,
    local_batch_size: int = 32,
    game_id: int = 0,
  ):
    """Validates the settings, then allocates the rings (capacity x 7 KB of frames).

    Args:
      capacity: rows held in all (padding included), split evenly over the streams.
      num_envs: E, the environments (streams) that `add` receives at each step.
      n_step, gamma: return horizon and discount.
      seed: sampling seed; batch(step) draws from `np.random.default_rng([seed, step])`.
      local_batch_size: B, transitions per batch.
      game_id: the game's index in the learner's game list (`Batch.game_id`).
    """
    _check_int("num_envs", num_envs, 1)
    _check_int("capacity", capacity, num_envs)
    _check_int("n_step", n_step, 1)
    _check_int("seed", seed, 0)
    _check_int("local_batch_size", local_batch_size, 1)
    _check_int("game_id", game_id, 0)
    if capacity % num_envs:
      raise ValueError(
        f"ReplayBuffer: capacity ({capacity}) must be a multiple of num_envs ({num_envs}): "
        "each environment's stream holds capacity // num_envs rows."
      )
    if capacity // num_envs < n_step + STACK:
      raise ValueError(
        f"ReplayBuffer: {capacity // num_envs} rows per stream (capacity {capacity} / num_envs "
        f"{num_envs}) cannot hold one transition, which needs n_step + {STACK} = "
        f"{n_step + STACK} rows (3 stack rows, the state, n_step rows after it)."
      )
    if not (isinstance(gamma, (int, float, np.floating)) and 0.0 <= gamma <= 1.0):
      raise ValueError(f"ReplayBuffer: gamma must be a float in [0, 1], got {gamma!r}.")
    self.capacity, self.num_envs, self.n_step, self.gamma = capacity, num_envs, n_step, gamma
    self.seed, self.local_batch_size, self.game_id = seed, local_batch_size, game_id
    e, r = num_envs, capacity // num_envs
    self._ring = r  # R, rows per stream; row t of a stream lives at slot t % R.
    # -- Rows (what `state()` saves).
    self._frames = np.zeros((e, r, *FRAME_SHAPE), np.uint8)
    self._action = np.zeros((e, r), np.int32)
    self._reward = np.zeros((e, r), np.float32)
    self._terminal = np.zeros((e, r), np.uint8)
    self._add_count = np.zeros(e, np.int64)  # rows ever written to each stream
    self._new_episode = np.ones(e, bool)  # the stream's next row opens an episode
    # -- Tables of the states at each slot (recomputed from the rows on `restore`).
    self._valid = np.zeros((e, r), bool)
    self._return = np.zeros((e, r), np.float32)
    self._discount = np.zeros((e, r), np.float32)
    self._length = np.zeros((e, r), np.int32)
    self._tabulated = np.zeros(e, np.int64)  # states below are tabulated or lost
    self._num_valid = 0

  # -- Adding rows.

  def add(self, obs, action, reward, ended) -> None:
    """Appends one acting step of every environment (3 padding rows first where one begins).

    Args:
      obs: uint8 [E, 84, 84, 4], the observations the actions were chosen on (newest last).
      action: int [E], the actions played.
      reward: float [E], the unclipped rewards that followed (clipped to [-1, 1] here).
      ended: bool [E], the episode ended after this step (terminated or truncated).
    """
    e = self.num_envs
    obs, action = np.asarray(obs), np.asarray(action)
    reward, ended = np.asarray(reward, np.float32), np.asarray(ended, bool)
    if obs.shape != (e, *FRAME_SHAPE, STACK) or obs.dtype != np.uint8:
      raise ValueError(f"obs must be uint8 [{e}, 84, 84, {STACK}], got {obs.dtype} {obs.shape}.")
    for name, x in (("action", action), ("reward", reward), ("ended", ended)):
      if x.shape != (e,):
        raise ValueError(f"{name} must have shape ({e},) (one per env), got {x.shape}.")
    if not np.issubdtype(action.dtype, np.integer):
      raise ValueError(f"action must be integers, got {action.dtype}.")
    envs = np.arange(e)
    opening = envs[self._new_episode]
    for _ in range(PAD):
      self._write(opening, 0, 0, 0.0, 0)
    self._write(envs, obs[..., -1], action, np.clip(reward, -1.0, 1.0), ended)
    self._new_episode = ended.copy()

  def end_episodes(self) -> None:
    """Ends every stream's running episode at its last row (marked terminal, as a time limit
    is): a resumed actor starts new episodes, and no n-step return may run from the cut
    episode into the next. Only untabulated states read that row's flag."""
    cut = np.flatnonzero(~self._new_episode & (self._add_count > 0))
    self._terminal[cut, (self._add_count[cut] - 1) % self._ring] = 1
    self._new_episode[:] = True

  def _write(self, envs: np.ndarray, frame, action, reward, terminal) -> None:
    """Writes one row to each stream in `envs` (int [K]); values broadcast to [K, ...]."""
    slot = self._add_count[envs] % self._ring
    # The state at this slot is overwritten; the 3 after it stack the overwritten row.
    stale = (slot[:, None] + np.arange(STACK)) % self._ring  # [K, 4]
    self._num_valid -= int(self._valid[envs[:, None], stale].sum())
    self._valid[envs[:, None], stale] = False
    self._frames[envs, slot] = frame
    self._action[envs, slot] = action
    self._reward[envs, slot] = reward
    self._terminal[envs, slot] = terminal
    self._add_count[envs] += 1

  def _tabulate(self) -> None:
    """Tabulates each stream's newly final states [lo, hi) as one block."""
    for e in range(self.num_envs):
      count = int(self._add_count[e])
      lo = max(int(self._tabulated[e]), count - self._ring + PAD)  # older stacks: overwritten
      hi = count - self.n_step  # state i is final once rows up to i + n_step exist
      if hi <= lo:
        continue
      first = max(0, lo - PAD)
      held = np.arange(first, count) % self._ring  # slots of rows first..count-1
      valid, ret, discount, length = transition_tables(
        self._terminal[e, held], self._reward[e, held], lo, hi, first, self.n_step, self.gamma
      )
      slot = held[valid]
      self._valid[e, slot] = True
      self._return[e, slot], self._discount[e, slot], self._length[e, slot] = ret, discount, length
      self._num_valid += len(slot)
      self._tabulated[e] = hi

  # -- Sampling.

  def batch(self, step: int) -> types.Batch:
    """The batch of `step`: B states drawn uniformly (with replacement) from the valid ones.

    Returns:
      `types.Batch` with leaves [B, ...]: obs/next_obs uint8 [B, 84, 84, 4], action int32,
      reward (n-step return) float32, discount float32, game_id int32.
    """
    self._tabulate()
    if self._num_valid == 0:
      raise ValueError(
        f"ReplayBuffer holds no valid transition yet ({self._rows_held()} rows in "
        f"{self.num_envs} streams): a state needs {PAD} rows of its episode before it and "
        f"n_step={self.n_step} rows after it. Add more steps before sampling."
      )
    rng = np.random.default_rng([self.seed, step])
    held = np.minimum(self._add_count, self._ring)  # [E]; stream e fills slots 0..held[e]-1
    ends = np.cumsum(held)
    b, streams, slots, got = self.local_batch_size, [], [], 0
    while got < b:  # rejection rounds, each sized to accept about what is missing
      size = int(np.ceil(1.25 * (b - got) * ends[-1] / self._num_valid)) + 8
      u = rng.integers(ends[-1], size=size)
      e = np.searchsorted(ends, u, side="right")
      s = u - (ends[e] - held[e])
      ok = self._valid[e, s]
      streams.append(e[ok])
      slots.append(s[ok])
      got += int(ok.sum())
    return self._gather(np.concatenate(streams)[:b], np.concatenate(slots)[:b])

  def _gather(self, e: np.ndarray, s: np.ndarray) -> types.Batch:
    """Transitions of the tabulated states at streams e int [B], slots s int [B]."""

    def stack(last: np.ndarray) -> np.ndarray:  # rows last-3..last -> uint8 [B, 84, 84, 4]
      return stack_frames([self._frames[e, (last - j) % self._ring] for j in range(PAD, -1, -1)])

    return types.Batch(
      obs=stack(s),
      action=self._action[e, s],
      reward=self._return[e, s],
      discount=self._discount[e, s],
      next_obs=stack(s + self._length[e, s]),
      game_id=np.full(len(e), self.game_id, np.int32),
    )

  def iterate(self, start_step: int, current_policy=None) -> Iterator[types.Batch]:
    """Yields batch(start_step), batch(start_step + 1), ... (whoever fills it acts in between;
    `current_policy` is unused: this buffer does not act itself)."""
    for step in itertools.count(start_step):
      yield self.batch(step)

  def valid_states(self) -> tuple[np.ndarray, np.ndarray]:
    """Every state that can be sampled: (stream int32 [V], row int64 [V]), sorted.

    `row` counts the stream's rows from its first (padding included), like a DQN Replay
    stream's position; rows [add_count - R, add_count) are held.
    """
    self._tabulate()
    e, s = np.nonzero(self._valid)
    last = self._add_count[e] - 1
    row = last - (last - s) % self._ring
    order = np.lexsort((row, e))
    return e[order].astype(np.int32), row[order]

  def transitions_at(self, stream, row) -> types.Batch:
    """The transitions of valid states given as in `valid_states` (int [V] each)."""
    self._tabulate()
    stream, row = np.asarray(stream, np.int64), np.asarray(row, np.int64)
    slot = row % self._ring
    count = self._add_count[stream]
    ok = (row < count) & (row >= count - self._ring) & self._valid[stream, slot]
    if not ok.all():
      i = int(np.argmin(ok))
      raise ValueError(f"Row {row[i]} of stream {stream[i]} is not a valid held state.")
    return self._gather(stream, slot)

  # -- DataSource bookkeeping.

  def _rows_held(self) -> int:
    return int(np.minimum(self._add_count, self._ring).sum())

  def describe(self) -> str:
    self._tabulate()
    return (
      f"ReplayBuffer(game_id={self.game_id}): capacity {self.capacity} ({self.num_envs} streams "
      f"x {self._ring} rows), {self._rows_held()} rows held, {self._num_valid} valid "
      f"transitions, n_step {self.n_step}, gamma {self.gamma}, uniform over valid states, "
      f"batch {self.local_batch_size}"
    )

  def state(self) -> dict[str, np.ndarray]:
    """Copies of the rows, positions and episode flags (a checkpoint may be written later)."""
    return {
      "observation": self._frames.copy(),  # uint8 [E, R, 84, 84]
      "action": self._action.copy(),  # int32 [E, R]
      "reward": self._reward.copy(),  # float32 [E, R], clipped
      "terminal": self._terminal.copy(),  # uint8 [E, R]
      "add_count": self._add_count.copy(),  # int64 [E]
      "new_episode": self._new_episode.copy(),  # bool [E]
    }

  def restore(self, state: dict[str, np.ndarray]) -> None:
    """Continues from `state()` ({} leaves the buffer as it is: a fresh run); tables recomputed."""
    if not state:
      return
    mine = self.state()
    if set(state) != set(mine):
      raise ValueError(
        f"ReplayBuffer state has keys {sorted(state)}, expected {sorted(mine)}: "
        "not a ReplayBuffer's state."
      )
    saved = np.shape(state["observation"])
    if saved != mine["observation"].shape:
      cap = saved[0] * saved[1] if len(saved) == 4 else "?"
      raise ValueError(
        f"ReplayBuffer state holds observations {saved} (capacity {cap}), but this buffer has "
        f"capacity {self.capacity} = {self.num_envs} streams x {self._ring} rows: restore into "
        "a buffer built with the saved capacity and num_envs."
      )
    for name, ref in mine.items():
      value = np.asarray(state[name])
      if value.shape != ref.shape:
        raise ValueError(f"ReplayBuffer state {name!r}: shape {value.shape}, expected {ref.shape}.")
      if not np.can_cast(value.dtype, ref.dtype, "same_kind"):
        raise ValueError(f"ReplayBuffer state {name!r}: dtype {value.dtype}, expected {ref.dtype}.")
    if np.any(np.asarray(state["add_count"]) < 0):
      raise ValueError(f"ReplayBuffer state: negative add_count {state['add_count']}.")
    for name, target in (
      ("observation", self._frames),
      ("action", self._action),
      ("reward", self._reward),
      ("terminal", self._terminal),
      ("add_count", self._add_count),
      ("new_episode", self._new_episode),
    ):
      target[...] = np.asarray(state[name])
    self._valid[...] = False
    self._tabulated[...] = 0
    self._num_valid = 0

  def close(self) -> None:
    """Nothing to release: no threads; the rings are freed with the buffer."""
