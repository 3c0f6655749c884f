"""Tests for scaled_ql.actor on real ALE games (ale-py ships the ROMs)."""

import hashlib

import numpy as np
import pytest

from scaled_ql import actor as actor_lib
from scaled_ql import atari, games, types


def _envs(game_sizes, max_episode_steps=100, seed=0):
  """One VectorEnv per (game, num_envs), DQN protocol with a short step cap."""
  protocol = atari.Protocol(max_episode_steps=max_episode_steps)
  return [
    atari.VectorEnv(game, n, protocol=protocol, seed=seed + g)
    for g, (game, n) in enumerate(game_sizes)
  ]


def _close(envs):
  for env in envs:
    env.close()


def _constant(action):
  return types.FunctionPolicy(lambda obs, game_id: np.full(len(obs), action, np.int32))


NOOP = _constant(0)


class _Recorder(types.Policy):
  """A stateful policy: random greedy actions, a per-env step counter reset on `ended` (what a
  Decision Transformer's context does), and a log of everything it is told."""

  def __init__(self, num_actions, num_envs, seed=0):
    self._num_actions, self._rng = np.asarray(num_actions), np.random.default_rng(seed)
    self.episode_step = np.zeros(num_envs, np.int64)
    self.chosen, self.observed = [], []

  def __call__(self, obs, game_id):
    self.chosen.append((self._rng.random(len(obs)) * self._num_actions).astype(np.int32))
    return self.chosen[-1]

  def observe(self, action, reward, ended):
    self.observed.append((action.copy(), reward.copy(), ended.copy()))
    self.episode_step = np.where(ended, 0, self.episode_step + 1)


def test_epsilon_draws_each_games_own_actions_at_the_expected_rate():
  envs = _envs([("Breakout", 2), ("MsPacman", 2)])
  try:
    actor = actor_lib.Actor(envs, _constant(1), rng=0)
    actor.reset()
    # Per-env epsilon: the first env of each game never explores, the second always does.
    epsilon = np.array([0.0, 1.0, 0.0, 1.0])
    actions = np.stack([actor.act(epsilon) for _ in range(2000)])  # [T, 4]
    assert (actions[:, [0, 2]] == 1).all()
    np.testing.assert_array_equal(np.unique(actions[:, 1]), np.arange(4))
    np.testing.assert_array_equal(np.unique(actions[:, 3]), np.arange(9))
    # Uniform over the game's own actions: each of Breakout's 4 about 1/4 of the time.
    np.testing.assert_allclose(np.bincount(actions[:, 1]) / 2000, 0.25, atol=0.04)
    # A scalar epsilon of 0.3: the policy's action is replaced by a different one with
    # probability 0.3 * (1 - 1/num_actions).
    actions = np.stack([actor.act(0.3) for _ in range(4000)])
    changed = (actions != 1).mean(axis=0)
    np.testing.assert_allclose(changed, [0.225, 0.225, 0.3 * 8 / 9, 0.3 * 8 / 9], atol=0.03)
  finally:
    _close(envs)


def test_stateful_policy_observes_played_actions_and_every_episode_end():
  envs = _envs([("Breakout", 2)], max_episode_steps=150)
  policy = _Recorder(games.num_actions("Breakout"), 2)
  try:
    actor = actor_lib.Actor(envs, policy, rng=1)
    first_obs = actor.reset()
    steps = []
    for _ in range(400):
      steps.append(actor.step(0.5))
      # The policy's per-env counter, reset when told of an episode end, is the env's own.
      np.testing.assert_array_equal(policy.episode_step, envs[0].last_info["episode_step"])
  finally:
    _close(envs)
  assert len(policy.observed) == len(policy.chosen) == 400
  played = np.stack([a for a, _, _ in policy.observed])
  ended = np.stack([e for _, _, e in policy.observed])
  np.testing.assert_array_equal(played, np.stack([s.action for s in steps]))
  np.testing.assert_array_equal(ended, np.stack([s.ended for s in steps]))
  # Exploration replaced some of the policy's actions, and the policy was told the played ones.
  assert 0.2 < (played != np.stack(policy.chosen)).mean() < 0.5
  # Both kinds of episode end happened: the game lost (terminated) and the step cap.
  assert np.stack([s.terminated for s in steps]).any()
  assert np.stack([s.truncated for s in steps]).any()

  # Replaying the played actions on a fresh env with the same seed gives the same episode ends
  # at the same steps, the same rewards and the same observations: the policy was told exactly
  # what the env did.
  (env,) = _envs([("Breakout", 2)], max_episode_steps=150)
  try:
    np.testing.assert_array_equal(env.reset(), first_obs)
    for t in range(len(steps)):
      obs, reward, terminated, truncated = env.step(played[t])
      np.testing.assert_array_equal(terminated | truncated, ended[t])
      np.testing.assert_array_equal(reward, policy.observed[t][1])
      if t + 1 < len(steps):
        np.testing.assert_array_equal(obs, steps[t + 1].obs)
  finally:
    env.close()
  # Episode accounting: where an episode ended, its length and return are the whole episode's.
  t_end, i_end = np.nonzero(ended)
  for t, i in zip(t_end, i_end, strict=True):
    starts = np.flatnonzero(ended[:t, i])
    start = starts[-1] + 1 if len(starts) else 0
    assert steps[t].episode_length[i] == t - start + 1
    rewards = [s.reward[i] for s in steps[start : t + 1]]
    assert steps[t].episode_return[i] == pytest.approx(sum(rewards))


def test_inactive_games_are_not_stepped_and_the_batch_keeps_its_shape():
  envs = _envs([("Breakout", 2), ("Pong", 3)], max_episode_steps=1000)
  shapes = []

  def policy(obs, game_id):
    shapes.append(obs.shape)
    return np.zeros(len(obs), np.int32)

  try:
    actor = actor_lib.Actor(envs, types.FunctionPolicy(policy), rng=0)
    actor.reset()
    for _ in range(5):
      actor.step(1.0)
    pong_obs = actor.obs[2:].copy()
    for _ in range(10):
      step = actor.step(1.0, active=[True, False])
      assert step.stepped.tolist() == [True, True, False, False, False]
      assert not step.reward[2:].any() and not step.ended[2:].any()
    np.testing.assert_array_equal(actor.obs[2:], pong_obs)  # Pong's frames never moved.
    np.testing.assert_array_equal(envs[0].last_info["episode_step"], [15, 15])
    np.testing.assert_array_equal(envs[1].last_info["episode_step"], [5, 5, 5])
    np.testing.assert_array_equal(step.episode_length, [15, 15, 5, 5, 5])
    step = actor.step(1.0, active=[False, True])
    assert step.stepped.tolist() == [False, False, True, True, True]
    np.testing.assert_array_equal(step.episode_length, [15, 15, 6, 6, 6])
  finally:
    _close(envs)
  assert shapes == [(5, 84, 84, 4)] * 16


def test_two_games_with_different_action_counts_share_one_batch():
  envs = _envs([("Breakout", 2), ("MsPacman", 3)], max_episode_steps=20)
  calls = []

  def policy(obs, game_id):
    calls.append(game_id.copy())
    return np.where(game_id == 5, 3, 8).astype(np.int32)  # Breakout's last, MsPacman's last.

  try:
    actor = actor_lib.Actor(envs, types.FunctionPolicy(policy), game_ids=[5, 2], rng=0)
    actor.reset()
    steps = [actor.step(0.0) for _ in range(25)]
    assert all(s.action.tolist() == [3, 3, 8, 8, 8] for s in steps)
    assert all(g.tolist() == [5, 5, 2, 2, 2] for g in calls)
    assert steps[19].truncated.all() and steps[19].episode_length.tolist() == [20] * 5
    # An action outside a game's own set is the policy's error, named with the game.
    bad = actor_lib.Actor(envs, _constant(4), rng=0)
    bad.reset()
    with pytest.raises(ValueError, match="for Breakout, which has 4 actions"):
      bad.step(0.0)
  finally:
    _close(envs)
  with pytest.raises(TypeError, match="FunctionPolicy"):
    actor_lib.Actor(envs, lambda obs, game_id: obs, rng=0)
  with pytest.raises(ValueError, match="1 game_ids for 2 games"):
    actor_lib.Actor(envs, None, game_ids=[0])


def test_same_seed_same_trajectory():
  def trajectory(rng_seed, policy=NOOP):
    envs = _envs([("Breakout", 2), ("Pong", 2)], max_episode_steps=50, seed=3)
    try:
      actor = actor_lib.Actor(envs, policy, rng=rng_seed)
      actor.reset()
      steps = [actor.step(0.3) for _ in range(120)]
    finally:
      _close(envs)
    digest = hashlib.sha1(b"".join(s.obs.tobytes() for s in steps)).hexdigest()
    return digest, np.stack([s.action for s in steps]), np.stack([s.reward for s in steps])

  first, again, other = trajectory(7), trajectory(7), trajectory(8)
  assert first[0] == again[0]
  np.testing.assert_array_equal(first[1], again[1])
  np.testing.assert_array_equal(first[2], again[2])
  assert (first[1] != other[1]).any() and first[0] != other[0]
  # No policy: uniform random actions, still a function of the seed.
  random_a, random_b = trajectory(7, policy=None), trajectory(7, policy=None)
  np.testing.assert_array_equal(random_a[1], random_b[1])
  assert (random_a[1] != 0).mean() > 0.5
