"""data_prep.collect on real ALE games: exact DQN Replay layout, dopamine-readable, resumable."""

import os

import numpy as np
import pytest

from data_prep import collect, convert
from scaled_ql import atari, games, types
from scaled_ql.data import ReplayDataset, dqn_replay, shards

CAPACITY, LIMIT = 500, 60


def _collect(replay_dir, num_checkpoints=2, partial_rows=150, **kwargs):
  collect.collect_run(
    "Breakout",
    replay_dir,
    CAPACITY,
    num_checkpoints,
    lambda k: 1.0,
    None,
    num_envs=2,
    max_episode_steps=LIMIT,
    partial_rows=partial_rows,
    progress=False,
    **kwargs,
  )


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("collect"))
  replay_dir = dqn_replay.replay_dir(root, "Breakout", 1)
  _collect(replay_dir)
  return root, replay_dir


def _time_ordered(replay_dir, suffix):
  info = dqn_replay.read_suffix_info(replay_dir, suffix)
  start, n = dqn_replay.time_order(info.capacity, info.add_count)
  order = (start + np.arange(n)) % info.capacity
  obs = dqn_replay.load_array(dqn_replay.filename(replay_dir, "$store$_observation", suffix))
  return obs[order], info.action[order], info.reward[order], info.terminal[order], info.add_count


def test_exact_layout(collected):
  _, replay_dir = collected
  names = [f"$store$_{n}" for n in ("observation", "action", "reward", "terminal")]
  names += ["add_count", "invalid_range"]
  expected = {f"{n}_ckpt.{k}.gz" for n in names for k in range(3)}
  assert set(os.listdir(replay_dir)) == expected
  assert [
    int(dqn_replay.load_array(dqn_replay.filename(replay_dir, "add_count", k))) for k in range(3)
  ] == [500, 1000, 1150]


def test_readable_by_dopamine(collected):
  from dopamine.tf.replay_memory.circular_replay_buffer import OutOfGraphReplayBuffer

  _, replay_dir = collected
  for k in range(3):
    buf = OutOfGraphReplayBuffer((84, 84), 4, CAPACITY, 8, update_horizon=3)
    buf.load(replay_dir, k)
    state = buf.sample_transition_batch()[0]
    assert state.shape == (8, 84, 84, 4) and state.any()


def test_rows_follow_the_dqn_replay_semantics(collected):
  _, replay_dir = collected
  obs, action, reward, terminal, _ = _time_ordered(replay_dir, 0)
  assert (action < games.num_actions("Breakout")).all() and (np.abs(reward) <= 1).all()
  # 3 zero padding rows start the log and follow every terminal.
  ends = np.concatenate([[-1], np.flatnonzero(terminal)])
  for k in range(1, 4):
    rows = ends[ends + k < len(terminal)] + k
    assert not obs[rows].any() and not action[rows].any() and not terminal[rows].any()
  # Time-limit ends are stored as terminal: a random Breakout agent rarely loses 5 lives in 60
  # steps, so episodes are exactly LIMIT rows long (+3 padding between them).
  lengths = np.diff(ends) - 3
  assert (lengths[1:] <= LIMIT).all() and (lengths[1:] == LIMIT).any()
  # The stored frame is the one the action was chosen on: each episode's first row is the
  # game's reset frame (Breakout starts identically), not the frame after the first action.
  env = atari.make_env("Breakout", seed=0)
  reset_frame = env.reset()[0][..., -1]
  env.close()
  for start in ends[:-1] + 4:
    np.testing.assert_array_equal(obs[start], reset_frame)


def test_files_are_time_contiguous_and_partial_last(collected):
  _, replay_dir = collected
  o1, *_ = _time_ordered(replay_dir, 1)
  o2, *_ = _time_ordered(replay_dir, 2)
  # The partial suffix: 150 new rows; its older rows are suffix 1's last 350 (buffer leftovers).
  np.testing.assert_array_equal(o2[:350], o1[150:])


def test_resume_after_interruption(tmp_path):
  replay_dir = dqn_replay.replay_dir(str(tmp_path), "Breakout", 1)
  _collect(replay_dir, num_checkpoints=1, partial_rows=0)  # "killed" after suffix 0
  shard_dir = str(tmp_path / "shards")
  assert convert.convert(str(tmp_path), shard_dir, ["Breakout"], [1], "all")["converted"] == 1
  _, _, _, terminal0, _ = _time_ordered(replay_dir, 0)
  assert not terminal0[-1]  # checkpoint 0 ends in the middle of an episode
  open(dqn_replay.filename(replay_dir, "$store$_action", 1) + ".tmp-123", "w").write("half")
  _collect(replay_dir, num_checkpoints=2, partial_rows=0)
  assert not [n for n in os.listdir(replay_dir) if ".tmp-" in n]
  assert dqn_replay.list_suffixes(replay_dir) == [0, 1]
  _, _, _, terminal0, _ = _time_ordered(replay_dir, 0)
  obs1, _, _, _, add_count1 = _time_ordered(replay_dir, 1)
  assert terminal0[-1] == 1  # the cut episode is closed
  assert not obs1[:3].any()  # the resumed stream starts with a new episode's padding
  assert add_count1 == 2 * CAPACITY
  _collect(replay_dir, num_checkpoints=2, partial_rows=0)  # complete: nothing to do
  # Suffix 0 changed after its conversion (its last row closed): converted again, not skipped.
  counts = convert.convert(str(tmp_path), shard_dir, ["Breakout"], [1], "all")
  assert counts == {"converted": 2, "skipped_done": 0, "skipped_bad": 0}
  shard_terminal = np.fromfile(
    os.path.join(shards.suffix_dir(shard_dir, "Breakout", 1, 0), "terminal.u8"), np.uint8
  )
  np.testing.assert_array_equal(shard_terminal, terminal0)
  assert convert.convert(str(tmp_path), shard_dir, ["Breakout"], [1], "all")["skipped_done"] == 2


def test_collect_convert_sample_round_trip(collected, tmp_path):
  root, _ = collected
  shard_dir = str(tmp_path / "shards")
  assert convert.convert(root, shard_dir, ["Breakout"], [1], "all")["converted"] == 3
  ds = ReplayDataset(
    shard_dir, ["Breakout"], runs=[1], local_batch_size=32, chunk_rows=128, pool_rows=512
  )
  assert [s.num_rows for s in ds._segments[0]] == [1150]  # 3 files, stitched, partial counted once
  batch = ds.batch(0)
  assert batch.obs.shape == (32, 84, 84, 4) and batch.obs[..., -1].any()
  # Time-limit terminals end n-step returns: some sampled transitions have discount 0.
  discounts = np.concatenate([ds.batch(s).discount for s in range(20)])
  assert (discounts == 0).any() and (discounts > 0).any()


def test_command_lines(tmp_path):
  """`python -m data_prep.collect` then `python -m data_prep.convert`, as a user runs them."""
  import subprocess
  import sys

  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  dqn, shard_dir = str(tmp_path / "dqn"), str(tmp_path / "shards")
  common = dict(cwd=repo, check=True, capture_output=True, text=True)
  subprocess.run(
    [sys.executable, "-m", "data_prep.collect", f"--output_dir={dqn}", "--games=Pong", "--runs=2",
     "--num_checkpoints=1", "--checkpoint_size=200", "--num_envs=1", "--max_episode_steps=50"],
    **common,
  )  # fmt: skip
  assert dqn_replay.list_suffixes(dqn_replay.replay_dir(dqn, "Pong", 2)) == [0]
  out = subprocess.run(
    [sys.executable, "-m", "data_prep.convert", f"--replay_dir={dqn}", f"--shard_dir={shard_dir}",
     "--games=Pong", "--runs=2"],
    **common,
  ).stdout  # fmt: skip
  assert "'converted': 1" in out
  bad = subprocess.run(
    [sys.executable, "-m", "data_prep.collect", f"--output_dir={dqn}", "--games=Pong",
     "--policy=schedule"],
    cwd=repo, capture_output=True, text=True,
  )  # fmt: skip
  assert bad.returncode != 0 and "needs --policy_workdir" in bad.stderr


def test_epsilon_greedy_over_a_policy(tmp_path):
  """The `checkpoint`/`schedule` path: epsilon 0 follows the policy; the schedule falls linearly."""
  replay_dir = dqn_replay.replay_dir(str(tmp_path), "Breakout", 1)
  collect.collect_run(
    "Breakout", replay_dir, 200, 1, lambda k: 0.0,
    types.FunctionPolicy(lambda obs, game_id: np.full(len(obs), 3)),
    num_envs=2, max_episode_steps=40, progress=False,
  )  # fmt: skip
  _, action, _, terminal, _ = _time_ordered(replay_dir, 0)
  ends = np.concatenate([[-1], np.flatnonzero(terminal)])
  padding = np.zeros(len(action), bool)
  for k in range(1, 4):
    padding[ends[ends + k < len(action)] + k] = True
  assert (action[~padding] == 3).all()
  schedule = [collect.epsilon_for("schedule", k, 5, 0.01, 1.0, 0.1) for k in range(5)]
  np.testing.assert_allclose(schedule, [1.0, 0.775, 0.55, 0.325, 0.1])
  assert collect.epsilon_for("random", 3, 5, 0.01, 1.0, 0.1) == 1.0


def test_a_multi_game_policy_plays_one_game_with_its_head():
  """`load_greedy_policy`'s wrapper: the run's head of the collected game, observe forwarded."""

  class Recorder(types.Policy):
    def __init__(self):
      self.game_ids, self.observed = [], []

    def __call__(self, obs, game_id):
      self.game_ids.append(game_id.copy())
      return np.zeros(len(obs), np.int32)

    def observe(self, action, reward, ended):
      self.observed.append(ended.copy())

  inner = Recorder()
  policy = collect._OneGamePolicy(inner, game_id=4)
  policy(np.zeros((2, 84, 84, 4), np.uint8), np.zeros(2, np.int32))
  policy.observe(np.zeros(2, np.int32), np.zeros(2, np.float32), np.array([True, False]))
  np.testing.assert_array_equal(inner.game_ids[0], [4, 4])
  assert inner.game_ids[0].dtype == np.int32
  np.testing.assert_array_equal(inner.observed[0], [True, False])
