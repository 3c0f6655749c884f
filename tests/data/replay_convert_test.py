"""data_prep.convert: streaming in blocks (wrap point inside a block), resumable, idempotent."""

import os

import numpy as np
import pytest
import replay_fixtures as rf

from data_prep import convert
from scaled_ql.data import dqn_replay, shards

CAPACITY = 300


@pytest.mark.parametrize("compress", [False, True])
def test_streaming_blocks_and_resume(tmp_path, monkeypatch, compress):
  root = str(tmp_path)
  replay_dir = os.path.join(root, "dqn", "Breakout", "1", "replay_logs")
  _, saved = rf.write_dopamine_run(replay_dir, CAPACITY, [450, 700, 820])
  monkeypatch.setattr(convert, "ROWS_PER_READ", 64)  # many blocks; the wrap point inside one
  shard_dir = os.path.join(root, "shards")
  # An interrupted earlier attempt left a partial directory: it is redone, never read.
  os.makedirs(shards.suffix_dir(shard_dir, "Breakout", 1, 1) + ".partial")
  counts = convert.convert(
    os.path.join(root, "dqn"), shard_dir, ["Breakout"], [1], "0-1", compress=compress
  )
  assert counts == {"converted": 2, "skipped_done": 0, "skipped_bad": 0}
  assert not any(
    d.endswith(".partial") for d in os.listdir(os.path.join(shard_dir, "Breakout", "1"))
  )
  counts = convert.convert(
    os.path.join(root, "dqn"), shard_dir, ["Breakout"], [1], "all", compress=compress
  )
  assert counts == {"converted": 1, "skipped_done": 2, "skipped_bad": 0}
  # Converted rows are the time-ordered new rows of each suffix.
  for k in range(3):
    info = dqn_replay.read_suffix_info(replay_dir, k)
    start, n = dqn_replay.time_order(info.capacity, info.add_count)
    new = n if k == 0 else min(n, saved[k] - saved[k - 1])
    order = (start + np.arange(n)) % info.capacity
    obs = dqn_replay.load_array(dqn_replay.filename(replay_dir, "$store$_observation", k))[order][
      n - new :
    ]
    directory = shards.suffix_dir(shard_dir, "Breakout", 1, k)
    part = shards.Part(directory, 0, new, compressed=compress)
    got = np.empty((new, 84, 84), np.uint8)
    shards.RowReader().read(shards.Segment((part,)), 0, new, {"observation.u8": got})
    assert os.path.exists(os.path.join(directory, "observation.z")) == compress
    np.testing.assert_array_equal(got, obs)
    np.testing.assert_array_equal(
      np.fromfile(os.path.join(directory, "terminal.u8"), np.uint8), info.terminal[order][n - new :]
    )
    meta = shards.read_meta(directory)
    assert meta["contiguous_with_previous"] == (k > 0 and saved[k] - saved[k - 1] <= CAPACITY)
