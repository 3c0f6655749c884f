"""Evaluator throughput against raw ALE, measured in the same run.

    python benchmarks/eval_throughput.py [--game=Breakout] [--num_envs=8] [--num_steps=1500]

Numerator: agent steps/s of `scaled_ql.evaluate.evaluate` playing `--game` with a tiny jitted
haiku network (a 4x4 patch-embedding conv + one linear layer, per-game heads) on `--num_envs` environments, DQN
protocol (sticky 0.25, epsilon 0.001). Anchor: agent steps/s of a raw
`ale_py.vector_env.AtariVectorEnv` with the same number of environments, the same DQN-protocol
settings and uniformly random actions. The two are measured alternately in short rounds
(10 x 400 batched steps each) and each throughput is total steps / total time over its rounds,
so load from other processes (this machine is shared) hits both alike.

Last line: `RESULT eval_vs_raw_ale <evaluator steps/s / raw steps/s>` (target >= 0.7).
"""

import time

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ale_py.vector_env import AtariVectorEnv

from scaled_ql import atari, evaluate, games, types

flags.DEFINE_string("game", "Breakout", "Game to play.")
flags.DEFINE_integer("num_envs", 8, "Parallel environments.")
flags.DEFINE_integer("num_steps", 400, "Batched steps per measurement (agent steps / num_envs).")
flags.DEFINE_integer("rounds", 10, "Alternating measurement rounds.")
FLAGS = flags.FLAGS


def tiny_policy(num_actions: list[int]) -> types.Policy:
  """A jitted greedy policy: a patch-embedding conv (4x4 patches, stride 4, 8 channels), ReLU,
  then a linear layer to per-game heads of 18 actions, masked to each game's action count."""

  def net(obs, game_id):
    x = hk.Conv2D(8, 4, stride=4, padding="VALID")(obs.astype(jnp.float32) / 255.0)
    q = hk.Linear(len(num_actions) * games.MAX_NUM_ACTIONS)(hk.Flatten()(jax.nn.relu(x)))
    q = q.reshape(-1, len(num_actions), games.MAX_NUM_ACTIONS)
    q = jnp.take_along_axis(q, game_id[:, None, None], axis=1)[:, 0]
    valid = jnp.arange(games.MAX_NUM_ACTIONS) < jnp.asarray(num_actions)[game_id][:, None]
    return jnp.argmax(jnp.where(valid, q, -jnp.inf), axis=-1).astype(jnp.int32)

  net = hk.without_apply_rng(hk.transform(net))
  params = net.init(
    jax.random.key(0), jnp.zeros((1, 84, 84, 4), jnp.uint8), jnp.zeros(1, jnp.int32)
  )
  act = jax.jit(net.apply)
  return types.FunctionPolicy(lambda obs, game_id: act(params, obs, game_id))


def raw_steps_and_time(game: str, num_envs: int, num_steps: int) -> tuple[int, float]:
  """(agent steps, seconds) of `num_steps` random batched steps (after the first reset)."""
  protocol = atari.Protocol()
  env = AtariVectorEnv(
    games.ale_rom_id(game), num_envs, max_num_frames_per_episode=protocol.max_episode_frames,
    repeat_action_probability=protocol.sticky_action_prob, autoreset_mode="SameStep",
    noop_max=0, use_fire_reset=False, reward_clipping=False, episodic_life=False,
  )  # fmt: skip
  rng = np.random.default_rng(0)
  num_actions = games.num_actions(game)
  env.reset(seed=0)
  start = time.perf_counter()
  for _ in range(num_steps):
    env.step(rng.integers(0, num_actions, num_envs, dtype=np.int32))
  elapsed = time.perf_counter() - start
  env.close()
  return num_steps * num_envs, elapsed


def eval_steps_and_time(
  policy: types.Policy, game: str, num_envs: int, num_steps: int
) -> tuple[int, float]:
  """(agent steps, seconds) of `evaluate`'s stepping loop (`wall_time_s` starts after reset)."""
  # 4 episodes per env capped at num_steps / 4: at most num_steps batched steps, and long
  # enough to include episode ends and autoresets.
  protocol = atari.Protocol(max_episode_steps=max(1, num_steps // 4))
  results = evaluate.evaluate(policy, [game], 4 * num_envs, protocol=protocol,
                              num_envs_per_game=num_envs, seed=0)  # fmt: skip
  return results.agent_steps, results.wall_time_s


def main(argv) -> None:
  del argv
  policy = tiny_policy([games.num_actions(FLAGS.game)])
  policy(np.zeros((FLAGS.num_envs, 84, 84, 4), np.uint8), np.zeros(FLAGS.num_envs, np.int32))
  raw, ours = [], []
  for k in range(FLAGS.rounds):
    raw.append(raw_steps_and_time(FLAGS.game, FLAGS.num_envs, FLAGS.num_steps))
    ours.append(eval_steps_and_time(policy, FLAGS.game, FLAGS.num_envs, FLAGS.num_steps))
    print(f"round {k}: raw AtariVectorEnv {raw[-1][0] / raw[-1][1]:,.0f} agent steps/s, "
          f"evaluator {ours[-1][0] / ours[-1][1]:,.0f} agent steps/s")  # fmt: skip
  raw_rate = sum(n for n, _ in raw) / sum(t for _, t in raw)
  ours_rate = sum(n for n, _ in ours) / sum(t for _, t in ours)
  print(f"{FLAGS.game}, {FLAGS.num_envs} envs, {FLAGS.rounds} rounds: raw {raw_rate:,.0f} agent "
        f"steps/s (random actions), evaluator {ours_rate:,.0f} agent steps/s (tiny network, "
        "epsilon 0.001)")  # fmt: skip
  print(f"RESULT eval_vs_raw_ale {ours_rate / raw_rate:.3f}")


if __name__ == "__main__":
  app.run(main)
