"""The one acting loop: a policy plays one or more games' vectorised ALE environments.

Evaluation (`scaled_ql.evaluate`), data collection (`data_prep.collect`) and online fine-tuning
all act through `Actor`. The environments of every game form one batch of N (game 0's envs
first); each step makes ONE policy call on all N observations, replaces actions by uniformly
random ones with probability epsilon (over each game's own action set), steps the games, tells
the policy what happened (`types.Policy.observe`), and keeps each environment's episode return
and length:

    actor = Actor(envs, policy, game_ids=[0, 3], rng=seed)
    obs = actor.reset()
    step = actor.step(epsilon=0.001)  # step.obs is what was acted on; actor.obs is next.

A row of a replay log or buffer is (step.obs, step.action, step.clipped_reward, step.ended).
`VectorEnv` autoresets in the same step, so `actor.obs` of an env whose episode just ended is
the first observation of its next episode, and every observation is acted on.
"""

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from scaled_ql import atari, types


class Step(NamedTuple):
  """What one step of N environments did.

  Attributes:
    obs: uint8 [N, 84, 84, 4], the observations the actions were chosen on.
    action: int32 [N], the actions played (the policy's or exploration's).
    reward: float32 [N], the unclipped game reward (0 where not stepped).
    terminated: bool [N], the game ended.
    truncated: bool [N], the episode hit the protocol's step cap.
    stepped: bool [N], the env was stepped (its game was active).
    episode_return: float64 [N], unclipped return of each env's episode so far, this step
      included; where `ended`, the whole finished episode's.
    episode_length: int64 [N], agent steps of each env's episode so far, likewise.
  """

  obs: np.ndarray
  action: np.ndarray
  reward: np.ndarray
  terminated: np.ndarray
  truncated: np.ndarray
  stepped: np.ndarray
  episode_return: np.ndarray
  episode_length: np.ndarray

  @property
  def ended(self) -> np.ndarray:
    """bool [N]: the env's episode ended at this step (its next observation starts a new one)."""
    return self.terminated | self.truncated

  @property
  def clipped_reward(self) -> np.ndarray:
    """float32 [N]: the training reward, clipped to [-1, 1]."""
    return np.clip(self.reward, -1.0, 1.0)


class Actor:
  """Steps several games' `VectorEnv`s as one batch with an epsilon-greedy policy.

  The actor does not own the environments: whoever built them closes them.
  """

  def __init__(
    self,
    envs: Sequence[atari.VectorEnv],
    policy: types.Policy | None,
    game_ids: Sequence[int] | None = None,
    rng: np.random.Generator | int | Sequence[int] = 0,
  ):
    """Builds the actor.

    Args:
      envs: one `VectorEnv` per game; the batch holds game 0's envs, then game 1's, ...
      policy: chooses actions for all N envs; None plays uniformly at random (epsilon 1, and
        nothing is called or observed).
      game_ids: the policy's head index of each game (its `game_id` input); default 0..G-1.
      rng: the exploration stream: a numpy Generator (used as is) or a seed for one. The same
        rng, environments and policy give the same trajectory.
    """
    if policy is not None and not isinstance(policy, types.Policy):
      raise TypeError(
        f"policy must be a scaled_ql.types.Policy (or None), got {type(policy).__name__}; "
        "wrap a function `(obs, game_id) -> actions` in types.FunctionPolicy."
      )
    game_ids = range(len(envs)) if game_ids is None else game_ids
    if len(game_ids) != len(envs):
      raise ValueError(f"{len(game_ids)} game_ids for {len(envs)} games.")
    self.envs, self.policy = list(envs), policy
    self._rng = np.random.default_rng(rng)
    sizes = [env.num_envs for env in self.envs]
    self.num_envs = sum(sizes)  # N
    bounds = np.cumsum([0, *sizes])
    self._rows = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    self.game_id = np.repeat(np.asarray(game_ids, np.int32), sizes)  # [N] policy head per env.
    self.num_actions = np.repeat([env.num_actions for env in self.envs], sizes)  # [N]
    self._env_game = np.repeat(np.arange(len(self.envs)), sizes)  # [N] index into envs.
    self.obs = None  # uint8 [N, 84, 84, 4] of the next step, once reset.
    self._episode_return = np.zeros(self.num_envs, np.float64)
    self._episode_length = np.zeros(self.num_envs, np.int64)

  def reset(self) -> np.ndarray:
    """Starts new episodes in every env. Returns obs uint8 [N, 84, 84, 4].

    Call it once before stepping: a policy is not told of this reset (its state must be fresh).
    """
    self.obs = np.concatenate([env.reset() for env in self.envs])
    self._episode_return[:] = 0.0
    self._episode_length[:] = 0
    return self.obs

  def act(self, epsilon: float | np.ndarray) -> np.ndarray:
    """Epsilon-greedy actions for `self.obs`: int32 [N]; one policy call, checked.

    `step` calls it; called alone it plays nothing (but draws from the exploration stream).

    Args:
      epsilon: probability of a uniformly random action, a float or float [N] per env.
    """
    n = self.num_envs
    if self.policy is None:
      greedy, epsilon = np.zeros(n, np.int32), 1.0
    else:
      greedy = np.asarray(self.policy(self.obs, self.game_id)).astype(np.int32)
      if greedy.shape != (n,):
        raise ValueError(f"The policy returned actions of shape {greedy.shape}, expected ({n},).")
      bad = (greedy < 0) | (greedy >= self.num_actions)
      if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
          f"The policy chose action {greedy[i]} for {self.envs[self._env_game[i]].game}, which "
          f"has {self.num_actions[i]} actions: the policy's heads do not match these "
          "games/game_ids."
        )
    explore = self._rng.random(n) < epsilon
    random_actions = (self._rng.random(n) * self.num_actions).astype(np.int32)
    return np.where(explore, random_actions, greedy)

  def step(
    self, epsilon: float | np.ndarray, active: Sequence[bool] | np.ndarray | None = None
  ) -> Step:
    """Acts on `self.obs` and steps the active games' envs once.

    Args:
      epsilon: probability of a uniformly random action, a float or float [N] per env.
      active: bool [G], which games to step (default all). The envs of an inactive game keep
        their observations, reward 0 and no episode end; the batch stays N wide, so a jitted
        policy never recompiles. The policy's `observe` still sees all N rows (for those envs:
        the chosen action, which was not played, reward 0, not ended).

    Returns:
      The `Step`; `self.obs` now holds the next observations.
    """
    if self.obs is None:
      raise RuntimeError("Call Actor.reset() before Actor.step().")
    n, obs = self.num_envs, self.obs
    action = self.act(epsilon)

    # -- Step the active games (a fresh obs array: the policy may keep the one it was given).
    next_obs = np.empty_like(obs)
    reward = np.zeros(n, np.float32)
    terminated, truncated, stepped = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
    for g, (env, rows) in enumerate(zip(self.envs, self._rows, strict=True)):
      if active is not None and not active[g]:
        next_obs[rows] = obs[rows]
        continue
      next_obs[rows], reward[rows], terminated[rows], truncated[rows] = env.step(action[rows])
      stepped[rows] = True
    ended = terminated | truncated

    # -- Episode accounting; an ended env's next observation begins its next episode.
    self._episode_return += reward
    self._episode_length += stepped
    step = Step(
      obs=obs,
      action=action,
      reward=reward,
      terminated=terminated,
      truncated=truncated,
      stepped=stepped,
      episode_return=self._episode_return.copy(),
      episode_length=self._episode_length.copy(),
    )
    self._episode_return[ended] = 0.0
    self._episode_length[ended] = 0
    self.obs = next_obs
    if self.policy is not None:
      self.policy.observe(action, reward, ended)
    return step
