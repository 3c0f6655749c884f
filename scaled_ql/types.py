"""Typed contracts between the data layer, the learner and the acting loop."""

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

# One Atari observation: 4 stacked 84x84 grayscale frames, newest last.
OBSERVATION_SHAPE = (84, 84, 4)


class Batch(NamedTuple):
  """A batch of n-step transitions from one or many games.

  Leaves are numpy arrays on the host (or jax arrays once on devices). `B` is the
  local batch size on a host and the global batch size inside the jitted step.

  Attributes:
    obs: uint8 [B, 84, 84, 4], the state s_t (4 frames, newest last).
    action: int32 [B], a_t as an index into the game's minimal action set.
    reward: float32 [B], sum_{k<n} gamma^k r_{t+k} of clipped rewards, stopped at
      the episode's terminal.
    discount: float32 [B], gamma^n, or 0 if the episode terminated within n steps.
    next_obs: uint8 [B, 84, 84, 4], the state s_{t+n} (bootstrap state).
    game_id: int32 [B], index of the game in the run's training-game list.
  """

  obs: np.ndarray
  action: np.ndarray
  reward: np.ndarray
  discount: np.ndarray
  next_obs: np.ndarray
  game_id: np.ndarray


def zeros_batch(batch_size: int) -> Batch:
  """An all-zero Batch: the shapes and dtypes of n-step transitions."""
  obs = np.zeros((batch_size, *OBSERVATION_SHAPE), np.uint8)
  return Batch(
    obs=obs,
    action=np.zeros(batch_size, np.int32),
    reward=np.zeros(batch_size, np.float32),
    discount=np.zeros(batch_size, np.float32),
    next_obs=obs,
    game_id=np.zeros(batch_size, np.int32),
  )


class WindowBatch(NamedTuple):
  """A batch of windows of consecutive steps of one episode (sequence models: the DT).

  A window of T = 4 steps ending at a state s_t is the state's own 4 frames, one per step,
  with each step's action, reward and return-to-go. Steps before an episode's first frame are
  dopamine's padding rows (zero frame, action 0, reward 0), flagged in `padding`; the acting
  loop's first observations of an episode hold the same zero frames.

  Attributes:
    obs: uint8 [B, 84, 84, T], frame k is step k's observation (oldest first).
    action: int32 [B, T], minimal-set action indices.
    reward: float32 [B, T], clipped rewards.
    return_to_go: float32 [B, T], sum of the clipped rewards from the step to the episode's end.
    terminal: bool [B, T], the episode ends at the step.
    padding: bool [B, T], the step is padding before the episode's first frame.
    game_id: int32 [B].
  """

  obs: np.ndarray
  action: np.ndarray
  reward: np.ndarray
  return_to_go: np.ndarray
  terminal: np.ndarray
  padding: np.ndarray
  game_id: np.ndarray


def zeros_window_batch(batch_size: int) -> WindowBatch:
  """An all-zero WindowBatch: the shapes and dtypes of windows of 4 steps."""
  steps = OBSERVATION_SHAPE[-1]
  return WindowBatch(
    obs=np.zeros((batch_size, *OBSERVATION_SHAPE), np.uint8),
    action=np.zeros((batch_size, steps), np.int32),
    reward=np.zeros((batch_size, steps), np.float32),
    return_to_go=np.zeros((batch_size, steps), np.float32),
    terminal=np.zeros((batch_size, steps), bool),
    padding=np.zeros((batch_size, steps), bool),
    game_id=np.zeros(batch_size, np.int32),
  )


class Policy:
  """Chooses actions for N environments at once; may keep state per environment.

  The acting loop (`scaled_ql.actor`) calls `policy(obs, game_id)` once per step for all its
  environments, then `observe(...)` with what happened, so that a stateful policy (a Decision
  Transformer's context and return-to-go) can update, and reset the environments whose episode
  ended. Stateless policies inherit the no-op `observe`.
  """

  def __call__(self, obs: np.ndarray, game_id: np.ndarray) -> np.ndarray:
    """obs uint8 [N, 84, 84, 4], game_id int32 [N] -> actions int32 [N] (minimal-set indices)."""
    raise NotImplementedError

  def observe(self, action: np.ndarray, reward: np.ndarray, ended: np.ndarray) -> None:
    """After a step: the actions played int32 [N] (exploration may have replaced the policy's),
    the unclipped rewards float32 [N], and bool [N] whose episode ended (the next observation
    of those environments starts a new episode)."""
    del action, reward, ended


class FunctionPolicy(Policy):
  """A stateless policy from a function `(obs, game_id) -> actions`."""

  def __init__(self, fn: Callable[[np.ndarray, np.ndarray], np.ndarray]):
    self._fn = fn

  def __call__(self, obs, game_id):
    return np.asarray(self._fn(obs, game_id))
