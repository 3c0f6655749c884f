"""Reads TFDS `rlu_atari_checkpoints_ordered` (RL Unplugged's copy of DQN Replay) from a local
`data_dir`, as DQN-Replay rows for `data_prep.convert --source=tfds`.

Dataset `rlu_atari_checkpoints_ordered/{Game}_run_{run}`, splits `checkpoint_00`..`checkpoint_49`,
episodes in order, steps with observation uint8 [84, 84, 1] (PNG), action int64, reward float32,
is_first/is_last/is_terminal, discount. An RLDS episode of T steps becomes DQN Replay rows: 3 zero
padding rows, then one row per step that has an action (frame, action, reward clipped to [-1, 1],
terminal). When the episode ends in a terminal state (`is_terminal` on the last step), the last
step holds only the final observation, which DQN Replay never stores: it is dropped and the row
before it is terminal. An episode that ends without a terminal state (a time limit or a cut)
keeps all T steps and its last row is marked terminal, the convention DQN Replay itself uses
for time-limit ends. Each split becomes one converted suffix (not stitched to its neighbours).
"""

import os
import re
from collections.abc import Iterator

import numpy as np

from scaled_ql.data import dqn_replay

DATASET = "rlu_atari_checkpoints_ordered"
PAD = dqn_replay.STACK_SIZE - 1


def _version_dir(data_dir: str, game: str, run: int) -> str:
  """Returns the newest prepared version directory of `{DATASET}/{game}_run_{run}`."""
  config_dir = os.path.join(data_dir, DATASET, f"{game}_run_{run}")
  versions = (
    sorted(
      (d for d in os.listdir(config_dir) if re.fullmatch(r"\d+\.\d+\.\d+", d)),
      key=lambda v: tuple(int(x) for x in v.split(".")),
    )
    if os.path.isdir(config_dir)
    else []
  )
  if not versions:
    raise dqn_replay.DataError(
      f"{config_dir}: TFDS {DATASET}/{game}_run_{run} is not present in data_dir {data_dir}"
    )
  return os.path.join(config_dir, versions[-1])


def _split_files(data_dir: str, game: str, run: int) -> dict[int, list[str]]:
  """Returns checkpoint -> its tfrecord shard files (in shard order)."""
  directory = _version_dir(data_dir, game, run)
  pattern = re.compile(rf"{DATASET}-checkpoint_(\d+)\.(tfrecord|array_record)-(\d+)-of-\d+$")
  out: dict[int, list[str]] = {}
  for name in sorted(os.listdir(directory)):
    m = pattern.match(name)
    if m:
      if m.group(2) != "tfrecord":
        raise dqn_replay.DataError(f"{directory}/{name}: only tfrecord TFDS shards are supported")
      out.setdefault(int(m.group(1)), []).append(os.path.join(directory, name))
  if not out:
    raise dqn_replay.DataError(f"{directory}: no checkpoint_NN tfrecord shards")
  return out


def list_checkpoints(data_dir: str, game: str, run: int) -> list[int]:
  """Returns the checkpoint numbers (split `checkpoint_NN` -> NN) present locally."""
  return sorted(_split_files(data_dir, game, run))


def episode_rows(steps: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Converts one RLDS episode's steps (numpy, batched over T) into DQN Replay rows.

  Returns:
    obs uint8 [R, 84, 84], action int32 [R], reward float32 [R] (clipped), terminal uint8 [R],
    R = 3 + number of stored steps.
  """
  obs = np.asarray(steps["observation"]).reshape(-1, 84, 84)
  action = np.asarray(steps["action"], np.int32)
  reward = np.clip(np.asarray(steps["reward"], np.float32), -1.0, 1.0)
  if not np.isfinite(reward).all():
    raise dqn_replay.DataError("an RLDS episode has NaN rewards")
  num = len(obs) - 1 if bool(np.asarray(steps["is_terminal"])[-1]) else len(obs)
  terminal = np.zeros(num, np.uint8)
  if num:
    terminal[-1] = 1
  pad = np.zeros(PAD, np.int32)
  return (
    np.concatenate([np.zeros((PAD, 84, 84), np.uint8), obs[:num]]),
    np.concatenate([pad, action[:num]]),
    np.concatenate([pad.astype(np.float32), reward[:num]]),
    np.concatenate([pad.astype(np.uint8), terminal]),
  )


def checkpoint_rows(data_dir: str, game: str, run: int, checkpoint: int) -> Iterator[tuple]:
  """Yields row blocks `(obs, action, reward, terminal)` of one split, one episode per block.

  Reads the prepared tfrecord shards directly with the builder's own feature spec (episodes in
  file order), without `tfds.builder(...)`, whose DatasetInfo parsing fails with protobuf 7.
  """
  import tensorflow as tf
  from tensorflow_datasets.rl_unplugged import atari_utils

  files = _split_files(data_dir, game, run).get(checkpoint)
  if not files:
    raise dqn_replay.DataError(
      f"{_version_dir(data_dir, game, run)}: no split checkpoint_{checkpoint:02d}"
    )
  features = atari_utils.features_dict()
  for serialized in tf.data.TFRecordDataset(files):
    try:
      episode = features.deserialize_example(serialized)
      steps = episode["steps"].batch(1 << 20).get_single_element()  # the whole episode, [T, ...]
    except tf.errors.OpError as e:
      raise dqn_replay.DataError(f"{files}: corrupt episode ({e.message})") from e
    yield episode_rows({k: v.numpy() for k, v in steps.items()})
