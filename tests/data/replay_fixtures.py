"""Shared test data: real ALE frames and DQN Replay buffers written by dopamine's own writer."""

import functools
import os
import subprocess
import sys

import numpy as np

from scaled_ql import atari


@functools.lru_cache(maxsize=None)
def real_frames(num_frames: int = 2000, game: str = "Breakout", seed: int = 0) -> np.ndarray:
  """Returns uint8 [num_frames, 84, 84] newest frames of a random policy in a real ALE game."""
  env = atari.make_env(game, seed=seed)
  rng = np.random.default_rng(seed)
  obs, _ = env.reset()
  frames = []
  while len(frames) < num_frames:
    frames.append(obs[..., -1])
    obs, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
    if terminated or truncated:
      obs, _ = env.reset()
  env.close()
  return np.stack(frames)


def make_dopamine_buffer(capacity: int, n_step: int = 3, gamma: float = 0.99):
  from dopamine.tf.replay_memory.circular_replay_buffer import OutOfGraphReplayBuffer

  return OutOfGraphReplayBuffer(
    observation_shape=(84, 84),
    stack_size=4,
    replay_capacity=capacity,
    batch_size=32,
    update_horizon=n_step,
    gamma=gamma,
  )


def write_dopamine_run(
  replay_dir: str,
  capacity: int,
  save_points: list[int],
  seed: int = 0,
  n_step: int = 3,
  gamma: float = 0.99,
  episode_lengths: tuple[int, int] = (5, 120),
):
  """Adds real-frame episodes to a dopamine buffer and `save`s suffix k when add_count reaches
  `save_points[k]` (or just above it: dopamine adds 3 padding rows at episode starts).

  Returns:
    The dopamine buffer (state after the last save) and the list of add_counts saved.
  """
  os.makedirs(replay_dir, exist_ok=True)
  frames = real_frames()
  rng = np.random.default_rng(seed)
  buf = make_dopamine_buffer(capacity, n_step, gamma)
  saved, t = [], 0
  while len(saved) < len(save_points):
    length = int(rng.integers(*episode_lengths))
    for i in range(length):
      terminal = i == length - 1
      reward = float(rng.choice([-1.0, 0.0, 0.0, 1.0]))
      buf.add(frames[t % len(frames)], int(rng.integers(4)), reward, terminal)
      t += 1
      if int(buf.add_count) >= save_points[len(saved)]:
        buf.save(replay_dir, len(saved))
        saved.append(int(buf.add_count))
        if len(saved) == len(save_points):
          break
  return buf, saved


def two_game_shards(root: str, capacity: int, episode_lengths: tuple[int, int] = (5, 120)) -> str:
  """Converted shards of 'Breakout' and 'Pong' (other real frames), 2 suffixes each, written by
  dopamine's own writer; returns the shard directory."""
  from data_prep import convert

  for i, game in enumerate(["Breakout", "Pong"]):
    replay_dir = os.path.join(root, "dqn", game, "1", "replay_logs")
    write_dopamine_run(replay_dir, capacity, [700, 1290], seed=i, episode_lengths=episode_lengths)
  convert.convert(
    os.path.join(root, "dqn"), os.path.join(root, "shards"), ["Breakout", "Pong"], [1], "all"
  )
  return os.path.join(root, "shards")


def collected_shards(root: str, games: str = "Breakout,Pong") -> str:
  """Collects 2 x 400 rows of random play per game on real ALE and converts them, as a user
  would (`python -m data_prep.collect`, then `convert`); returns the shard directory."""
  for module, *args in (
    ("data_prep.collect", f"--output_dir={root}/replay", "--num_checkpoints=2",
     "--checkpoint_size=400", "--policy=random", "--seed=0"),
    ("data_prep.convert", f"--replay_dir={root}/replay", f"--shard_dir={root}/shards"),
  ):  # fmt: skip
    result = subprocess.run(
      [sys.executable, "-m", module, *args, f"--games={games}", "--runs=1"],
      capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, f"{module} failed:\n{result.stderr[-5000:]}"
  return os.path.join(root, "shards")
