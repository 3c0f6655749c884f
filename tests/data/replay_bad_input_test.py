"""Bad input: every problem is a DataError naming the file and the problem (never a silent load)."""

import gzip
import json
import os
import shutil

import numpy as np
import pytest
import replay_fixtures as rf

from data_prep import convert
from scaled_ql.data import DataError, ReplayDataset, dqn_replay, shards

CAPACITY = 200


@pytest.fixture(scope="module")
def good_root(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("good"))
  rf.write_dopamine_run(os.path.join(root, "Breakout", "1", "replay_logs"), CAPACITY, [250, 400])
  return root


@pytest.fixture
def root(good_root, tmp_path):
  copy = str(tmp_path / "dqn")
  shutil.copytree(good_root, copy)
  return copy


def _path(root, name, suffix=0):
  return dqn_replay.filename(os.path.join(root, "Breakout", "1", "replay_logs"), name, suffix)


def _convert(root, tmp_path, **kwargs):
  return convert.convert(root, str(tmp_path / "shards"), ["Breakout"], [1], "all", **kwargs)


def _rewrite(path, array, allow_pickle=False):
  with gzip.open(path, "wb") as f:
    np.save(f, array, allow_pickle=allow_pickle)


def _expect(root, tmp_path, path, problem):
  with pytest.raises(DataError) as e:
    _convert(root, tmp_path)
  assert path in str(e.value) and problem in str(e.value), str(e.value)


def test_good_data_converts(root, tmp_path):
  assert _convert(root, tmp_path) == {"converted": 2, "skipped_done": 0, "skipped_bad": 0}


def test_truncated_gzip(root, tmp_path):
  path = _path(root, "$store$_observation")
  data = open(path, "rb").read()
  open(path, "wb").write(data[: len(data) // 2])
  _expect(root, tmp_path, path, "")
  with pytest.raises(DataError, match="truncated|corrupt"):
    _convert(root, tmp_path)


def test_corrupt_gzip(root, tmp_path):
  path = _path(root, "$store$_terminal")
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2 : len(data) // 2 + 8] = b"\xff" * 8
  open(path, "wb").write(bytes(data))
  _expect(root, tmp_path, path, "")


def test_missing_file(root, tmp_path):
  path = _path(root, "$store$_reward", 1)
  os.remove(path)
  _expect(root, tmp_path, path, "file missing")


@pytest.mark.parametrize(
  "name,array,problem",
  [
    ("$store$_action", np.zeros(CAPACITY, np.float32), "wrong dtype"),
    ("$store$_terminal", np.zeros(CAPACITY + 1, np.uint8), "wrong shape"),
    ("$store$_observation", np.zeros((CAPACITY, 84, 80), np.uint8), "wrong dtype/shape"),
    ("add_count", np.zeros(3, np.int64), "0-d integer"),
  ],
)
def test_wrong_dtype_or_shape(root, tmp_path, name, array, problem):
  _rewrite(_path(root, name), array)
  _expect(root, tmp_path, _path(root, name), problem)


def test_object_array_is_refused(root, tmp_path):
  path = _path(root, "$store$_action")
  _rewrite(path, np.array([{"x": 1}] * CAPACITY, dtype=object), allow_pickle=True)
  _expect(root, tmp_path, path, "pickles are never loaded")


def test_pickle_is_refused(root, tmp_path):
  path = _path(root, "add_count")
  import pickle

  with gzip.open(path, "wb") as f:
    pickle.dump(250, f)
  _expect(root, tmp_path, path, "not a gzip-wrapped .npy file")


def test_nan_reward(root, tmp_path):
  path = _path(root, "$store$_reward")
  reward = dqn_replay.load_array(path)
  reward[5] = np.nan
  _rewrite(path, reward)
  _expect(root, tmp_path, path, "NaN")


def test_add_count_inconsistent(root, tmp_path):
  # Not above the previous suffix's add_count.
  _rewrite(_path(root, "add_count", 1), np.array(100, np.int64))
  _expect(root, tmp_path, _path(root, "add_count", 1), "not above")


def test_add_count_inconsistent_with_arrays(root, tmp_path):
  # Claims a never-wrapped buffer: its first rows would have to be an episode's padding.
  _rewrite(_path(root, "add_count", 0), np.array(CAPACITY - 20, np.int64))
  os.remove(_path(root, "add_count", 1))
  _expect(root, tmp_path, _path(root, "add_count", 0), "add_count is inconsistent")


def test_skip_flag_warns_and_counts(root, tmp_path):
  os.remove(_path(root, "$store$_reward", 1))
  counts = _convert(root, tmp_path, skip_bad=True)
  assert counts == {"converted": 1, "skipped_done": 0, "skipped_bad": 1}


def test_empty_or_wrong_directory(tmp_path):
  os.makedirs(tmp_path / "empty")
  with pytest.raises(DataError, match="no checkpoints found for game 'Breakout'"):
    convert.convert(str(tmp_path / "empty"), str(tmp_path / "s"), ["Breakout"], [1], "all")
  with pytest.raises(DataError, match="directory does not exist.*Breakout.*data_prep.convert"):
    ReplayDataset(str(tmp_path / "nowhere"), ["Breakout"], runs=[1])


def test_missing_game_in_shards(root, tmp_path):
  _convert(root, tmp_path)
  shard_dir = str(tmp_path / "shards")
  with pytest.raises(DataError) as e:
    ReplayDataset(shard_dir, ["Breakout", "Pong"], runs=[1])
  assert (
    shard_dir in str(e.value) and "'Pong'" in str(e.value) and "data_prep.convert" in str(e.value)
  )
  with pytest.raises(DataError, match=r"lacks converted suffixes \[7\]"):
    ReplayDataset(shard_dir, ["Breakout"], runs=[1], suffixes="0,7")


def test_incomplete_conversion_is_not_read(root, tmp_path):
  _convert(root, tmp_path)
  shard_dir = str(tmp_path / "shards")
  os.remove(os.path.join(shard_dir, "Breakout", "1", "01", "meta.json"))
  with pytest.raises(DataError, match="incompletely converted"):
    ReplayDataset(shard_dir, ["Breakout"], runs=[1])


def test_truncated_converted_shard(root, tmp_path):
  _convert(root, tmp_path)
  path = os.path.join(str(tmp_path / "shards"), "Breakout", "1", "00", "observation.u8")
  os.truncate(path, os.path.getsize(path) - 84 * 84)
  with pytest.raises(DataError, match="observation.u8: .* bytes, expected"):
    ReplayDataset(str(tmp_path / "shards"), ["Breakout"], runs=[1])


def test_data_without_rows_is_named(root, tmp_path):
  _convert(root, tmp_path)
  shard_dir = str(tmp_path / "shards")
  for suffix in ("00", "01"):
    meta_path = os.path.join(shard_dir, "Breakout", "1", suffix, "meta.json")
    with open(meta_path) as f:
      meta = json.load(f)
    with open(meta_path, "w") as f:
      json.dump(dict(meta, num_rows=0), f)
    for name, _ in shards.ROW_FILES:
      os.truncate(os.path.join(os.path.dirname(meta_path), name), 0)
  with pytest.raises(DataError, match="hold no rows for game 'Breakout'"):
    ReplayDataset(shard_dir, ["Breakout"], runs=[1])


def test_actions_outside_the_games_action_set(root, tmp_path, monkeypatch):
  # An 18-action game's data under Breakout's name (4 actions): DQN Replay actions index the
  # game's own minimal action set, so action 7 is refused before any observation is streamed.
  path = _path(root, "$store$_action")
  action = dqn_replay.load_array(path)
  action[np.flatnonzero(action)[:2]] = [7, 12]
  _rewrite(path, action)

  def stream_rows(*args):
    raise AssertionError("observations streamed before the actions were checked")

  monkeypatch.setattr(dqn_replay, "stream_rows", stream_rows)
  with pytest.raises(DataError) as e:
    _convert(root, tmp_path)
  assert str(e.value) == (
    f"{path}: action 7 is outside Breakout's 4 actions (0..3): is this another game's data?"
  )


def test_rows_outside_the_games_action_set(tmp_path):
  # The TFDS path converts row blocks: each block is checked before it is written.
  rows = (np.zeros((4, 84, 84), np.uint8), np.array([0, 0, 0, 4]), np.zeros(4), np.eye(4)[-1])
  meta = dict(source="src", checkpoint=3)
  with pytest.raises(DataError, match=r"^src checkpoint 3: action 4 is outside Breakout's 4 act"):
    convert.convert_rows([rows], str(tmp_path / "out"), "Breakout", meta)


def test_shards_of_another_game_are_refused(root, tmp_path):
  _convert(root, tmp_path)
  shard_dir = str(tmp_path / "shards")
  os.rename(os.path.join(shard_dir, "Breakout"), os.path.join(shard_dir, "Pong"))
  with pytest.raises(DataError) as e:
    ReplayDataset(shard_dir, ["Pong"], runs=[1])
  directory = shards.suffix_dir(shard_dir, "Pong", 1, 0)
  assert str(e.value).startswith(f"{directory}: converted as Breakout's data, read as Pong's")


def test_old_shards_are_checked_when_sampled(root, tmp_path):
  # Shards converted before convert recorded the game: the sampler checks each loaded chunk.
  _convert(root, tmp_path)
  shard_dir = str(tmp_path / "shards")
  for suffix in (0, 1):
    path = os.path.join(shards.suffix_dir(shard_dir, "Breakout", 1, suffix), "meta.json")
    with open(path) as f:
      meta = json.load(f)
    del meta["game"]
    with open(path, "w") as f:
      json.dump(meta, f)
  os.rename(os.path.join(shard_dir, "Breakout"), os.path.join(shard_dir, "Freeway"))
  dataset = ReplayDataset(shard_dir, ["Freeway"], runs=[1], local_batch_size=8, pool_rows=512)
  try:
    with pytest.raises(DataError, match=r"action 3 is outside Freeway's 3 actions \(0..2\)"):
      dataset.batch(0)
  finally:
    dataset.close()
