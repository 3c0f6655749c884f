"""TFDS rlu_atari_checkpoints_ordered, read from a tiny local dataset built by the real TFDS builder."""

import os

import numpy as np
import pytest
import replay_fixtures as rf

from data_prep import convert
from scaled_ql.data import DataError, ReplayDataset, shards

pytest.importorskip("importlib_resources")  # tfds-nightly's builder needs it (not pulled by pip)
tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

GAME, RUN = "Pong", 1


def _example(checkpoint, episode, frames, actions, rewards, terminal):
  """One episode in RL Unplugged's raw tf.Example format (what the builder downloads)."""

  def floats(v):
    return tf.train.Feature(float_list=tf.train.FloatList(value=list(v)))

  def ints(v):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(v)))

  discounts = np.ones(len(frames), np.float32)
  discounts[-1] = 0.0 if terminal else 1.0
  pngs = [tf.io.encode_png(f[..., None]).numpy() for f in frames]
  feature = {
    "checkpoint_idx": ints([checkpoint]),
    "episode_idx": ints([episode]),
    "episode_return": floats([0.0]),
    "clipped_episode_return": floats([0.0]),
    "observations": tf.train.Feature(bytes_list=tf.train.BytesList(value=pngs)),
    "actions": ints(actions),
    "unclipped_rewards": floats(rewards),
    "clipped_rewards": floats(np.clip(rewards, -1, 1)),
    "discounts": floats(discounts),
  }
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory, monkeypatch_module):
  from tensorflow_datasets.rl_unplugged import atari_utils
  from tensorflow_datasets.rl_unplugged.rlu_atari_checkpoints_ordered import (
    rlu_atari_checkpoints_ordered as builder_module,
  )

  root = str(tmp_path_factory.mktemp("tfds"))
  source = os.path.join(root, "source")
  monkeypatch_module.setattr(
    builder_module.RluAtariCheckpointsOrdered, "_INPUT_FILE_PREFIX", source
  )
  prefix = atari_utils.file_prefix(source, RUN, GAME)
  os.makedirs(os.path.dirname(prefix))
  frames = rf.real_frames()
  episodes = {}  # checkpoint -> [(frames, actions, rewards, terminal)]
  num_shards = atari_utils.num_shards(GAME, 50)
  for k in range(num_shards):
    lengths = [(30, True), (12, False), (20, True)] if k < 2 else [(2, True)]
    episodes[k], t = [], (100 * k) % 1800
    for length, terminal in lengths:
      ep = (frames[t : t + length], np.arange(length) % 6, np.linspace(-3, 3, length), terminal)
      episodes[k].append(ep)
      t += length
    with tf.io.TFRecordWriter(f"{prefix}-{k:05d}-of-{num_shards:05d}", options="GZIP") as w:
      for i, ep in enumerate(episodes[k]):
        w.write(_example(k, i, *ep))
  data_dir = os.path.join(root, "data")
  tfds.builder(
    f"rlu_atari_checkpoints_ordered/{GAME}_run_{RUN}", data_dir=data_dir
  ).download_and_prepare()
  return data_dir, episodes


@pytest.fixture(scope="module")
def monkeypatch_module():
  with pytest.MonkeyPatch.context() as mp:
    yield mp


def test_tfds_checkpoints_convert_to_dqn_rows(tfds_dir, tmp_path):
  data_dir, episodes = tfds_dir
  shard_dir = str(tmp_path / "shards")
  counts = convert.convert(
    None, shard_dir, [GAME], [RUN], "0-1", source="tfds", tfds_data_dir=data_dir
  )
  assert counts["converted"] == 2
  for k in range(2):
    directory = shards.suffix_dir(shard_dir, GAME, RUN, k)
    meta = shards.read_meta(directory)
    obs = np.fromfile(os.path.join(directory, "observation.u8"), np.uint8).reshape(-1, 84, 84)
    action = np.fromfile(os.path.join(directory, "action.i32"), np.int32)
    reward = np.fromfile(os.path.join(directory, "reward.f32"), np.float32)
    terminal = np.fromfile(os.path.join(directory, "terminal.u8"), np.uint8)
    # Expected rows: padding, then every step with an action; a terminal episode drops its final
    # (observation-only) step; a non-terminal end keeps all steps and is marked terminal.
    want_obs, want_action, want_reward, want_terminal = [], [], [], []
    for frames, actions, rewards, is_terminal in episodes[k]:
      n = len(frames) - 1 if is_terminal else len(frames)
      want_obs += [np.zeros((3, 84, 84), np.uint8), frames[:n]]
      want_action += [np.zeros(3), actions[:n]]
      want_reward += [np.zeros(3), np.clip(rewards[:n], -1, 1)]
      want_terminal += [np.zeros(3), np.eye(n)[-1]]
    assert meta["num_rows"] == len(np.concatenate(want_action))
    np.testing.assert_array_equal(obs, np.concatenate(want_obs))
    np.testing.assert_array_equal(action, np.concatenate(want_action))
    np.testing.assert_allclose(reward, np.concatenate(want_reward), rtol=1e-6)
    np.testing.assert_array_equal(terminal, np.concatenate(want_terminal))
  ds = ReplayDataset(
    shard_dir, [GAME], runs=[RUN], suffixes="0-1", local_batch_size=16, chunk_rows=32, pool_rows=128
  )
  assert ds.batch(0).obs.shape == (16, 84, 84, 4)


def test_missing_tfds_dataset_is_an_error(tmp_path):
  with pytest.raises(DataError, match="rlu_atari_checkpoints_ordered/Pong_run_1 is not present"):
    convert.convert(
      None, str(tmp_path / "s"), [GAME], [RUN], "0", source="tfds", tfds_data_dir=str(tmp_path)
    )
