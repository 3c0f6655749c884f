"""The reader against dopamine's own writer and sampler (dopamine-rl 4.1.2), on real ALE frames."""

import os

import numpy as np
import pytest
import replay_fixtures as rf

from data_prep import convert
from scaled_ql.data import ReplayDataset

CAPACITY = 1000


def _dataset(root, n_step=3, suffixes="all", **kwargs):
  return ReplayDataset(
    os.path.join(root, "shards"),
    ["Breakout"],
    runs=[1],
    suffixes=suffixes,
    n_step=n_step,
    gamma=0.9,
    local_batch_size=32,
    chunk_rows=128,
    pool_rows=512,
    **kwargs,
  )


def _convert(root, compress=False):
  return convert.convert(
    os.path.join(root, "dqn"), os.path.join(root, "shards"), ["Breakout"], [1], "all",
    compress=compress,
  )  # fmt: skip


def _replay_dir(root):
  return os.path.join(root, "dqn", "Breakout", "1", "replay_logs")


def _assert_equal_to_dopamine(ours, dopamine_batch):
  state, action, reward, next_state, _, _, terminal, _ = dopamine_batch
  np.testing.assert_array_equal(ours.obs, state)
  np.testing.assert_array_equal(ours.action, action)
  np.testing.assert_allclose(ours.reward, reward, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(ours.next_obs, next_state)
  np.testing.assert_array_equal(ours.discount == 0, terminal.astype(bool))


@pytest.mark.parametrize("n_step,add_until", [(3, 2500), (1, 2500), (5, 700)])
def test_matches_dopamine_sample_transition_batch(tmp_path, n_step, add_until):
  """Full (wrapped) and not-full buffers: same valid states and same transitions as dopamine."""
  root = str(tmp_path)
  _, saved = rf.write_dopamine_run(
    _replay_dir(root), CAPACITY, [add_until], n_step=n_step, gamma=0.9
  )
  _convert(root)
  dop = rf.make_dopamine_buffer(CAPACITY, n_step, 0.9)
  dop.load(_replay_dir(root), 0)
  ds = _dataset(root, n_step)
  start = saved[0] % CAPACITY if saved[0] >= CAPACITY else 0
  dop_valid = np.array([i for i in range(CAPACITY) if dop.is_valid_transition(i)])
  dop_rows = (dop_valid - start) % CAPACITY  # dopamine buffer index -> time-ordered row
  ours = ds.valid_rows(0, 0)
  # Dopamine also rejects the state at time row 3 of a wrapped buffer (its stack lies wholly after
  # the cursor, so it is valid data): that is the only allowed difference.
  extra = set(ours.tolist()) - set(dop_rows.tolist())
  assert extra <= ({3} if saved[0] >= CAPACITY else set())
  assert set(dop_rows.tolist()) <= set(ours.tolist())
  batch = dop.sample_transition_batch(len(dop_valid), indices=dop_valid)
  _assert_equal_to_dopamine(ds.transitions_at(0, 0, dop_rows), batch)
  # Terminal transitions exist and have discount 0; others gamma^n.
  t = ds.transitions_at(0, 0, ours)
  assert (t.discount == 0).any() and np.allclose(t.discount[t.discount > 0], 0.9**n_step)


@pytest.mark.parametrize("compress", [False, True])
def test_file_boundaries_and_partial_last_file(tmp_path, compress):
  """Three checkpoints saved from one stream (the last partial) read as one contiguous stream.

  Reference: a dopamine buffer that received the same adds but never wrapped, so n-step returns
  and stacks across the file boundaries are defined by it. Raw and zlib-block (--compress) shards.
  """
  root = str(tmp_path)
  buf, saved = rf.write_dopamine_run(_replay_dir(root), CAPACITY, [1000, 1990, 2300])
  assert saved[1] - saved[0] <= CAPACITY and saved[2] - saved[1] < CAPACITY  # contiguous, partial
  ref_dir = os.path.join(root, "ref")
  _, ref_saved = rf.write_dopamine_run(ref_dir, 4000, [2300])
  assert ref_saved == [saved[2]]
  ref = rf.make_dopamine_buffer(4000, 3, 0.9)
  ref.load(ref_dir, 0)
  counts = _convert(root, compress)
  assert counts["converted"] == 3
  ds = _dataset(root)
  assert all(p.compressed == compress for p in ds._segments[0][0].parts)
  assert len(ds._segments[0]) == 1  # stitched into one segment
  offset = saved[0] - CAPACITY  # adds lost before suffix 0's oldest row
  assert ds._segments[0][0].num_rows == saved[2] - offset  # the partial file: only new rows
  ours = ds.valid_rows(0, 0)  # segment row r == add index r + offset
  ref_valid = np.array([i for i in range(offset + 3, saved[2]) if ref.is_valid_transition(i)])
  np.testing.assert_array_equal(ours + offset, ref_valid)
  for boundary in saved[:2]:
    rows = ours + offset
    assert ((rows >= boundary - 3) & (rows < boundary)).any()  # n-step windows cross files
  batch = ref.sample_transition_batch(len(ref_valid), indices=ref_valid)
  reference = ds.transitions_at(0, 0, ours)
  _assert_equal_to_dopamine(reference, batch)
  # The sampler's chunk reads (which cross files and compressed blocks) give the same frames.
  keys = {
    (o.tobytes(), n.tobytes()) for o, n in zip(reference.obs, reference.next_obs, strict=True)
  }
  for step in range(3):
    sampled = ds.batch(step)
    assert all(
      (o.tobytes(), n.tobytes()) in keys for o, n in zip(sampled.obs, sampled.next_obs, strict=True)
    )


def test_unstitched_suffix_selection_cuts_at_boundaries(tmp_path):
  """Selecting suffixes 0 and 2 only: two segments; no transition spans the missing suffix."""
  root = str(tmp_path)
  rf.write_dopamine_run(_replay_dir(root), CAPACITY, [1000, 1990, 2300])
  _convert(root)
  ds = _dataset(root, suffixes="0,2")
  assert [s.num_rows for s in ds._segments[0]] == [1000, 2300 - 1990]
  assert ds.valid_rows(0, 0).max() <= 1000 - 1 - 3


def test_sampled_batches_are_dopamine_transitions(tmp_path):
  """Every sampled transition (via the pool) equals the one dopamine builds for its state."""
  root = str(tmp_path)
  rf.write_dopamine_run(_replay_dir(root), CAPACITY, [CAPACITY - 10])
  _convert(root)
  ds = _dataset(root)
  reference = ds.transitions_at(0, 0, ds.valid_rows(0, 0))

  def key(t, i):
    return (
      t.obs[i].tobytes(),
      t.next_obs[i].tobytes(),
      int(t.action[i]),
      float(t.reward[i]),
      float(t.discount[i]),
    )

  transitions = {key(reference, i) for i in range(len(reference.obs))}
  for step in range(3):
    batch = ds.batch(step)
    assert all(key(batch, b) in transitions for b in range(len(batch.obs)))
