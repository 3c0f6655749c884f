"""Episodes in the replay stream: returns-to-go, windowed batches and filtered selections.

The references are computed row by row from the converted arrays of dopamine-written buffers,
independently of `episodes.py`'s vectorised code.
"""

import numpy as np
import pytest
import replay_fixtures as rf

from scaled_ql.data import ReplayDataset, episodes, shards

CAPACITY = 600


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
  return rf.two_game_shards(str(tmp_path_factory.mktemp("data")), CAPACITY, episode_lengths=(5, 60))


def _dataset(shard_dir, **kwargs):
  args = dict(runs=[1], seed=0, local_batch_size=64, chunk_rows=64, pool_rows=512)
  return ReplayDataset(shard_dir, ["Breakout", "Pong"], **{**args, **kwargs})


def _segment_rows(shard_dir, game):
  """Every segment of the game as whole arrays (obs, action, reward, terminal)."""
  reader, out = shards.RowReader(), []
  for segment in shards.find_segments(shard_dir, game, [1]):
    n = segment.num_rows
    arrays = {
      "observation.u8": np.empty((n, 84, 84), np.uint8),
      "action.i32": np.empty(n, np.int32),
      "reward.f32": np.empty(n, np.float32),
      "terminal.u8": np.empty(n, np.uint8),
    }
    reader.read(segment, 0, n, arrays)
    out.append(tuple(arrays.values()))
  reader.close()
  return out


def _reference_windows(shard_dir, game):
  """(4 frames, actions) -> the set of (rewards, returns-to-go, terminals, paddings) of every
  window whose last state is valid and whose episode ends inside its segment; and the whole
  episodes' returns."""
  windows, whole_returns = {}, []
  for obs, action, reward, terminal in _segment_rows(shard_dir, game):
    n = len(action)
    ends = [i for i in range(n) if terminal[i]]
    for a, b in zip(ends[:-1], ends[1:], strict=True):
      whole_returns.append(float(sum(reward[a + 1 : b + 1])))
    for i in range(3, n):
      if any(terminal[i - 3 : i]) or not any(terminal[i:]):
        continue
      rows = range(i - 3, i + 1)
      rtg = []
      for j in rows:
        end = next(e for e in ends if e >= j)
        rtg.append(float(sum(reward[j : end + 1])))
      padding = tuple(any(terminal[max(0, j - 3) : j]) for j in rows)
      key = (np.stack([obs[j] for j in rows], -1).tobytes(), tuple(int(action[j]) for j in rows))
      value = (tuple(float(reward[j]) for j in rows), tuple(rtg),
               tuple(bool(terminal[j]) for j in rows), padding)  # fmt: skip
      windows.setdefault(key, set()).add(value)
  return windows, whole_returns


def test_returns_to_go_stay_inside_episodes():
  reward = np.array([1, 0, 1, 0, 0, 0, -1, 1, 1], np.float32)
  terminal = np.array([0, 0, 1, 0, 0, 0, 0, 1, 0], bool)
  np.testing.assert_array_equal(
    episodes.returns_to_go(reward, terminal), [2, 1, 1, 0, 0, 0, 0, 1, 1]
  )
  # With no terminal the sum runs to the end (the caller marks such rows unknown).
  np.testing.assert_array_equal(episodes.returns_to_go(reward[:2], terminal[:2]), [1, 0])


def test_windows_match_the_rows_they_come_from(shard_dir):
  ds = _dataset(shard_dir, windows=True)
  references = [_reference_windows(shard_dir, game)[0] for game in ds.game_names]
  seen_padding = seen_terminal = 0
  for step in range(0, 60, 3):
    batch = ds.batch(step)
    assert batch.obs.shape == (64, 84, 84, 4) and batch.return_to_go.shape == (64, 4)
    for i in range(64):
      key = (batch.obs[i].tobytes(), tuple(int(a) for a in batch.action[i]))
      got = (tuple(float(r) for r in batch.reward[i]), tuple(float(r) for r in batch.return_to_go[i]),
             tuple(bool(t) for t in batch.terminal[i]), tuple(bool(p) for p in batch.padding[i]))  # fmt: skip
      assert got in references[batch.game_id[i]].get(key, set()), (step, i, got)
    seen_padding += int(batch.padding.any())
    seen_terminal += int(batch.terminal.any())
  assert seen_padding and seen_terminal  # the windows at episode starts and ends were drawn
  ds.close()


def test_windows_are_a_pure_function_of_the_step(shard_dir):
  a, b = _dataset(shard_dir, windows=True), _dataset(shard_dir, windows=True)
  later = [a.batch(s) for s in range(12)]
  for x, y in zip(b.batch(11), later[11], strict=True):
    np.testing.assert_array_equal(x, y)
  a.close(), b.close()


def _reference_top_episodes(shard_dir, game, fraction):
  """%BC as the DT's gym code selects it, episode by episode: bool [rows] of each segment's
  kept rows, and the kept episodes' returns."""
  episodes_ = []  # (return, segment, start, end) of each whole episode
  segments = _segment_rows(shard_dir, game)
  for s, (_, _, reward, terminal) in enumerate(segments):
    ends = [i for i in range(len(reward)) if terminal[i]]
    episodes_ += [(float(sum(reward[a + 1 : b + 1])), s, a + 1, b)
                  for a, b in zip(ends[:-1], ends[1:], strict=True)]  # fmt: skip
  # Highest return first; among equal returns the later episode first.
  episodes_.sort(key=lambda e: (e[0], e[1], e[2]), reverse=True)
  budget = int(fraction * sum(b + 1 - a for _, _, a, b in episodes_))
  rows = [np.zeros(len(seg[2]), bool) for seg in segments]
  taken, returns = 0, []
  for ret, s, a, b in episodes_:
    if returns and taken + b + 1 - a > budget:
      break
    rows[s][a : b + 1] = True
    taken += b + 1 - a
    returns.append(ret)
  return rows, returns


def test_top_episode_fraction_keeps_the_best_episodes_filling_the_fraction(shard_dir):
  ds = _dataset(shard_dir, windows=True, top_episode_fraction=0.25)
  for g, game in enumerate(ds.game_names):
    rows, returns = _reference_top_episodes(shard_dir, game, 0.25)
    kept = [episodes.selected_rows(i, k) for i, k in
            zip(ds._episode_indices[g], ds.kept_episodes[g], strict=True)]  # fmt: skip
    for got, want in zip(kept, rows, strict=True):
      np.testing.assert_array_equal(got, want)
    whole_rows = sum(int(i.ends[-1] - i.ends[0]) for i in ds._episode_indices[g])
    assert sum(int(k.sum()) for k in kept) <= 0.25 * whole_rows
    # Every sampled window's episode is a kept one: its return is at least the lowest kept.
    for step in range(20):
      batch = ds.batch(step)
      starts = (batch.game_id == g) & batch.padding[:, 0] & ~batch.padding[:, -1]
      first_real = np.argmin(batch.padding[starts], axis=1)
      sampled = batch.return_to_go[starts][np.arange(starts.sum()), first_real]
      assert (sampled >= min(returns)).all()
  assert "the best episodes filling 25% of the rows (%BC): Breakout kept " in ds.describe()
  ds.close()


def test_ties_at_the_cut_do_not_inflate_the_selection():
  # 9 whole episodes (15 rows, then 10 each); 4 share the top return. Top 10% of the rows is
  # 1 episode, the latest of the tied ones; a quantile threshold with `>=` would keep all 4.
  ends = np.array([4, 19, 29, 39, 49, 59, 69, 79, 89, 99])  # episode 0 began before the segment
  returns = np.array([0, 3, 5, 5, 1, 5, 2, 5, 0, 1], np.float32)
  index = episodes.EpisodeIndex(ends.astype(np.int64), returns, 100)
  (kept,) = episodes.top_episodes([index], 0.1)
  assert kept.sum() == 1 and kept[7]
  (kept,) = episodes.top_episodes([index], 0.5)  # 50% of 95 rows: 4 episodes of 10 fit
  assert set(np.flatnonzero(kept)) == {2, 3, 5, 7}
  assert not episodes.top_episodes([index], 0.01)[0][0]  # the first is never whole


def test_bad_top_episode_fraction_is_refused_before_reading(shard_dir):
  with pytest.raises(ValueError, match=r"top_episode_fraction must be in \(0, 1\], got 0"):
    _dataset(shard_dir, top_episode_fraction=0.0)


def test_chunks_are_weighted_by_their_rows_in_selected_episodes(shard_dir):
  ds = _dataset(shard_dir, top_episode_fraction=0.25)
  for g, game in enumerate(ds.game_names):
    (selected,) = _reference_top_episodes(shard_dir, game, 0.25)[0]  # one segment per game
    expected = [selected[lo:hi].sum() for _, lo, hi in ds._host_chunks(game, ds._segments[g], 64)]
    np.testing.assert_array_equal(ds._chunk_sizes[g], [n for n in expected if n])
    assert len(ds._chunks[g]) == sum(1 for n in expected if n) < len(expected)
  ds.close()


def test_a_segment_without_an_episode_end_knows_nothing():
  class _Reader:  # the arrays of a 10-row segment with no terminal
    def read(self, segment, lo, hi, out):
      out["reward.f32"][:] = 1.0
      out["terminal.u8"][:] = 0

  index = episodes.EpisodeIndex(np.zeros(0, np.int64), np.zeros(0, np.float32), 10)
  facts = episodes.ChunkEpisodes(_Reader(), None, index, 2, 8)
  assert not facts.known.any() and not facts.padding.any()
  assert np.isnan(facts.whole_return).all() and not facts.return_to_go.any()
  assert not episodes.selected_rows(index, None).any()
