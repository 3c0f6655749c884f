"""Episodes inside the DQN Replay stream: returns-to-go, padding rows, and episode filters.

A segment (`shards.Segment`) is a time-ordered stream of rows in which episodes follow each
other; a terminal row ends an episode and the `STACK - 1` all-zero rows after it (dopamine's
padding: action 0, reward 0, not terminal) come before the next episode's first frame. An
episode is the rows after the previous terminal up to and including its own terminal, so its
padding rows belong to it (reward 0, they change no return).

The index of a segment (`index_segment`) is its terminal rows and the return of the episode each
ends, read once from the small reward and terminal arrays (5 bytes a row). From it a chunk of
rows gets, without holding anything per row in memory:
  * returns-to-go: the sum of the clipped rewards from a row to its episode's terminal, never
    across an episode or segment boundary; rows whose episode does not end inside the segment
    (the stream was cut: file end or `row_fraction`) have no known return-to-go;
  * which rows are padding (the steps a policy sees before an episode's first frame);
  * which rows belong to the episodes a selection keeps (filtered behaviour cloning: the best
    episodes by return that fill X% of the rows, `top_episodes`).
"""

import dataclasses
from collections.abc import Sequence

import numpy as np

from scaled_ql.data import shards
from scaled_ql.data.dqn_replay import STACK_SIZE

_INDEX_BLOCK_ROWS = 1 << 18


def returns_to_go(reward: np.ndarray, terminal: np.ndarray) -> np.ndarray:
  """Undiscounted returns-to-go within episodes.

  Args:
    reward: float32 [L] clipped rewards of consecutive rows.
    terminal: bool or uint8 [L], True where an episode ends.

  Returns:
    float32 [L]: for row i, sum of reward[i..e] with e the first terminal row >= i (the end of
    the array when none: the caller knows which rows' episodes end inside).
  """
  num_rows = len(reward)
  ends = np.flatnonzero(terminal)
  suffix = np.zeros(num_rows + 1)  # suffix[i] = sum of reward[i:]
  suffix[:-1] = np.cumsum(reward[::-1], dtype=np.float64)[::-1]
  after = np.append(ends + 1, num_rows)[np.searchsorted(ends, np.arange(num_rows))]  # [L]
  return (suffix[:-1] - suffix[after]).astype(np.float32)  # rows after the episode removed


@dataclasses.dataclass(frozen=True)
class EpisodeIndex:
  """The episodes of one segment.

  Attributes:
    ends: int64 [E], the terminal rows, increasing.
    returns: float32 [E], the return of the episode each ends (clipped rewards summed from the
      row after the previous terminal; for the first episode, from the segment's first row).
    num_rows: the segment's rows.
  """

  ends: np.ndarray
  returns: np.ndarray
  num_rows: int

  @property
  def whole_returns(self) -> np.ndarray:
    """float32 [E - 1]: returns of the episodes that start inside the segment (the first
    episode may have started in rows the segment does not hold)."""
    return self.returns[1:]


def index_segment(reader: shards.RowReader, segment: shards.Segment) -> EpisodeIndex:
  """Reads a segment's terminal and reward arrays (in blocks) and indexes its episodes."""
  ends, sums = [], []
  running = 0.0
  for lo in range(0, segment.num_rows, _INDEX_BLOCK_ROWS):
    hi = min(segment.num_rows, lo + _INDEX_BLOCK_ROWS)
    reward, terminal = np.empty(hi - lo, np.float32), np.empty(hi - lo, np.uint8)
    reader.read(segment, lo, hi, {"reward.f32": reward, "terminal.u8": terminal})
    cumulative = running + np.cumsum(reward, dtype=np.float64)
    block_ends = np.flatnonzero(terminal)
    ends.append(lo + block_ends)
    sums.append(cumulative[block_ends])
    running = float(cumulative[-1]) if len(cumulative) else running
  ends = np.concatenate(ends) if ends else np.zeros(0, np.int64)
  at_end = np.concatenate(sums) if sums else np.zeros(0)
  returns = np.diff(np.concatenate([[0.0], at_end])).astype(np.float32)
  return EpisodeIndex(ends.astype(np.int64), returns, segment.num_rows)


def selected_rows(index: EpisodeIndex, kept: np.ndarray | None) -> np.ndarray:
  """bool [num_rows]: the rows whose episode ends inside the segment (its return-to-go is
  known) and, with `kept` (bool [E], see `top_episodes`), is one of the kept episodes."""
  if not len(index.ends):
    return np.zeros(index.num_rows, bool)
  episode = np.searchsorted(index.ends, np.arange(index.num_rows))  # E: unended
  if kept is None:
    return episode < len(index.ends)
  return np.append(kept, False)[episode]


def top_episodes(indices: Sequence[EpisodeIndex], top_fraction: float) -> list[np.ndarray]:
  """A game's best whole episodes that fill `top_fraction` of its whole episodes' rows.

  As the Decision Transformer's %BC (Chen et al. 2021, its gym experiment code): episodes
  sorted by return, highest first, are taken while their rows fit in that fraction of all
  rows (the best one always), so ties at the cut never inflate the selection; among equal
  returns the later episode (the later segment, then the later row) comes first.

  Args:
    indices: the game's segments' episode indices.
    top_fraction: in (0, 1].

  Returns:
    per segment, bool [E]: the episode is kept (a segment's first episode, which may have
    started before it, never is).

  Raises:
    ValueError: if top_fraction is not in (0, 1], or no episode lies wholly in the data.
  """
  if not 0.0 < top_fraction <= 1.0:
    raise ValueError(f"top_episode_fraction must be in (0, 1], got {top_fraction}.")
  segment = np.concatenate([np.full(len(x.ends) - 1, s) for s, x in enumerate(indices)
                            if len(x.ends)] or [np.zeros(0, int)])  # fmt: skip
  episode = np.concatenate([np.arange(1, len(x.ends)) for x in indices if len(x.ends)]
                           or [np.zeros(0, int)])  # fmt: skip
  if not len(episode):
    raise ValueError(
      "top_episode_fraction: no episode starts and ends inside the selected data, so no "
      "episode's return is known; select more rows (suffixes, row_fraction)."
    )
  returns = np.concatenate([x.whole_returns for x in indices])
  rows = np.concatenate([np.diff(x.ends) for x in indices if len(x.ends)])  # whole episodes'
  order = np.lexsort((episode, segment, returns))[::-1]  # best first, ties: later first
  budget = max(int(top_fraction * rows.sum()), 1)
  taken = max(1, int(np.sum(np.cumsum(rows[order]) <= budget)))
  kept = [np.zeros(len(x.ends), bool) for x in indices]
  for i in order[:taken]:
    kept[segment[i]][episode[i]] = True
  return kept


class ChunkEpisodes:
  """Per-row episode facts of a chunk of loaded rows.

  Attributes:
    reward: float32 [L], the clipped reward.
    return_to_go: float32 [L] (0 where unknown).
    padding: bool [L], the row is one of the zero rows before an episode's first frame.
    terminal: bool [L].
    episode: int64 [L], the row's episode in the segment's index (E when it does not end
      inside the segment).
    known: bool [L], the row's episode ends inside the segment (return-to-go known).
    whole_return: float32 [L], the return of the row's episode (NaN when it does not lie
      wholly inside the segment).
  """

  def __init__(
    self, reader: shards.RowReader, segment: shards.Segment, index: EpisodeIndex, first: int,
    num_loaded: int,
  ):  # fmt: skip
    """Reads the rewards from row `first` to the end of the last loaded row's episode.

    Args:
      reader: the row reader.
      segment: the segment; index: its `EpisodeIndex`.
      first, num_loaded: loaded row j is segment row first + j.
    """
    rows = first + np.arange(num_loaded)
    self.episode = episode = np.searchsorted(index.ends, rows)  # [L] (E: unended)
    self.known = episode < len(index.ends)
    last = first + num_loaded - 1
    if self.known[-1]:
      last = int(index.ends[episode[-1]])
    reward, terminal = np.empty(last + 1 - first, np.float32), np.empty(last + 1 - first, np.uint8)
    reader.read(segment, first, last + 1, {"reward.f32": reward, "terminal.u8": terminal})
    self.return_to_go = np.where(self.known, returns_to_go(reward, terminal)[:num_loaded], 0.0)
    self.reward, self.terminal = reward[:num_loaded], terminal[:num_loaded].astype(bool)
    if len(index.ends):
      previous_end = np.where(episode > 0, index.ends[np.maximum(episode - 1, 0)], -STACK_SIZE)
      episode_return = index.returns[np.minimum(episode, len(index.ends) - 1)]
    else:  # No episode ends in the segment: nothing is known.
      previous_end, episode_return = np.full(num_loaded, -STACK_SIZE), np.zeros(num_loaded)
    self.padding = (episode > 0) & (rows - previous_end < STACK_SIZE)
    whole = self.known & (episode > 0)
    self.whole_return = np.where(whole, episode_return, np.nan).astype(np.float32)
