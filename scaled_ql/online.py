"""Online training's data source: act in a game variant with the learner's policy, learn from
what was played.

    OnlineSource(game_names=[G], ..., variant=K) as the trainer's `dataset_fn`:
      warm-up: `warmup_env_steps` of uniformly random play into the replay buffer;
      then per gradient step: `env_steps_per_grad_step` environment steps with the learner's
      current policy, epsilon-greedy on a linear schedule over the environment steps after
      the warm-up (dopamine's `linearly_decaying_epsilon`: epsilon_start through the warm-up,
      then a linear fall to epsilon_end), then the step's batch from the buffer
      (`data.replay_buffer.ReplayBuffer`).

Environment steps count every environment's steps (8 envs stepped once = 8). The source's
checkpointed state is the buffer's rows and the environment-step count, so a resumed run keeps
its buffer; the episodes running at the interruption are ended there (marked terminal, as a
time limit is) and new ones begin. Each logged step reports `online/env_steps`,
`online/epsilon` and, when episodes ended since the last log, their number and mean return.
"""

import itertools
from collections.abc import Sequence

import numpy as np

from scaled_ql import atari, games
from scaled_ql.actor import Actor
from scaled_ql.data import replay_buffer, source


class OnlineSource(source.DataSource):
  """Acts in one game variant's vectorised ALE environments and samples what it played."""

  data_quality = "online"  # Reports' data column: the agent's own play.

  def __init__(
    self,
    game_names: Sequence[str],
    local_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    *,
    variant: int = 0,
    num_envs: int = 4,
    buffer_capacity: int = 100_000,
    env_steps_per_grad_step: int = 4,
    warmup_env_steps: int = 1_000,
    epsilon_start: float = 1.0,
    epsilon_end: float = 0.01,
    epsilon_decay_env_steps: int = 50_000,
    n_step: int = 3,
    gamma: float = 0.99,
    max_episode_steps: int = 27_000,
  ):
    """Checks the settings and allocates the buffer (the environments start in `iterate`).

    Args:
      game_names: the run's games: one, the game being played (game_id 0).
      local_batch_size, seed, process_index, process_count: from the trainer (one process).
      variant: index into `atari.variants(game)`.
      num_envs: environments stepped together.
      buffer_capacity: rows the replay buffer keeps (split over the environments).
      env_steps_per_grad_step: environment steps (all envs together) per gradient step; a
        multiple of num_envs. 4 is DQN's (and dopamine's) one update per 4 agent steps.
      warmup_env_steps: random-play environment steps before the first batch.
      epsilon_start, epsilon_end, epsilon_decay_env_steps: the linear exploration schedule,
        counted from the end of the warm-up.
      n_step, gamma: the transitions' return horizon and discount.
      max_episode_steps: the episode cap (the DQN Replay protocol's 27,000 by default).
    """
    del process_index
    if len(game_names) != 1:
      raise ValueError(f"OnlineSource plays one game; the run has {list(game_names)}.")
    if process_count != 1:
      raise ValueError(
        "OnlineSource acts as one data shard: run it with one process and train.data_shards = 1."
      )
    if env_steps_per_grad_step < num_envs or env_steps_per_grad_step % num_envs:
      raise ValueError(
        f"OnlineSource.env_steps_per_grad_step={env_steps_per_grad_step} must be a positive "
        f"multiple of num_envs={num_envs} (every environment steps alike)."
      )
    if not 0.0 <= epsilon_end <= epsilon_start <= 1.0 or epsilon_decay_env_steps < 1:
      raise ValueError(
        f"OnlineSource: the epsilon schedule must fall from epsilon_start ({epsilon_start}) to "
        f"epsilon_end ({epsilon_end}) in [0, 1] over epsilon_decay_env_steps >= 1 "
        f"({epsilon_decay_env_steps})."
      )
    self.game = games.validate_games(game_names)[0]
    atari.variant_settings(self.game, variant)  # Names the valid variants if not one.
    self.variant, self.num_envs, self.seed = variant, num_envs, seed
    self.protocol = atari.Protocol(max_episode_steps=max_episode_steps)
    self._steps_per_batch = env_steps_per_grad_step // num_envs
    self._warmup, self._schedule = warmup_env_steps, (epsilon_start, epsilon_end,
                                                      epsilon_decay_env_steps)  # fmt: skip
    self.buffer = replay_buffer.ReplayBuffer(
      buffer_capacity, num_envs, n_step, gamma, seed, local_batch_size, game_id=0
    )
    self.env_steps = 0
    self._returns: list[float] = []  # Episodes ended since the last `metrics()`.
    self._env = None

  def epsilon(self) -> float:
    """The exploration rate at the current environment step (the decay starts after the
    warm-up, as dopamine's does)."""
    start, end, decay = self._schedule
    return start + (end - start) * min(1.0, max(0, self.env_steps - self._warmup) / decay)

  def iterate(self, start_step, current_policy=None):
    """Plays, then yields batch(start_step), batch(start_step + 1), ... (see the module doc)."""
    if current_policy is None:
      raise ValueError("OnlineSource acts with the learner's policy: give `current_policy`.")
    env_seed = int(np.random.SeedSequence([self.seed, start_step]).generate_state(1)[0] % 2**30)
    self._env = atari.VectorEnv(self.game, self.num_envs, self.variant, self.protocol, env_seed)
    actor = Actor([self._env], policy=None, rng=[self.seed, start_step, 1])
    actor.reset()
    self.buffer.end_episodes()  # A resumed buffer's last episodes were cut by the interruption.
    while self.env_steps < self._warmup:  # Uniformly random play (no policy yet).
      self._act(actor, 1.0)
    for step in itertools.count(start_step):
      actor.policy = current_policy()  # Valid until the next gradient step.
      for _ in range(self._steps_per_batch):
        self._act(actor, self.epsilon())
      yield self.buffer.batch(step)

  def _act(self, actor: Actor, epsilon: float) -> None:
    step = actor.step(epsilon)
    self.buffer.add(step.obs, step.action, step.reward, step.ended)
    self.env_steps += self.num_envs
    self._returns.extend(step.episode_return[step.ended].tolist())

  def metrics(self) -> dict[str, float]:
    out = {"online/env_steps": float(self.env_steps), "online/epsilon": self.epsilon()}
    if self._returns:
      out.update({"online/episodes": float(len(self._returns)),
                  "online/episode_return": float(np.mean(self._returns))})  # fmt: skip
    self._returns = []
    return out

  def describe(self) -> str:
    mode, difficulty = atari.variant_settings(self.game, self.variant)
    return (
      f"OnlineSource: {self.game} variant {self.variant} (mode {mode}, difficulty {difficulty}), "
      f"{self.num_envs} envs, {self._steps_per_batch * self.num_envs} env steps per gradient "
      f"step, {self._warmup} warm-up steps; {self.buffer.describe()}"
    )

  def state(self) -> dict[str, np.ndarray]:
    return {**self.buffer.state(), "env_steps": np.int64(self.env_steps)}

  def restore(self, state: dict[str, np.ndarray]) -> None:
    if not state:
      return
    state = dict(state)
    self.env_steps = int(state.pop("env_steps"))
    self.buffer.restore(state)

  def close(self) -> None:
    if self._env is not None:
      self._env.close()
