"""Online fine-tuning's loop against what its parts allow, measured in the same run.

    python benchmarks/online_throughput.py [--game=Breakout] [--variant=0] [--grad_steps=600]

The configuration is gin/local_finetune_online.gin's (the small CPU model, 4 environments, 4
environment steps per gradient step, batch 32), from scratch.
  * Loop: environment steps/s of `trainer.train` driving `online.OnlineSource` (the current
    policy's forward pass on every observation, epsilon-greedy, the replay buffer's writes and
    n-step batches, the train step, the logging), from its own metrics.jsonl: the median over
    log windows after the first (which holds the compilation; the random warm-up comes before
    the first window).
  * Parts: (a) the environments alone: `atari.VectorEnv` on the same game and variant stepped
    with uniformly random actions (variant 0: ale-py's C++ `AtariVectorEnv`; a variant: the
    ALE envs the loop then steps one after another); (b) the train step alone: the compiled
    step of the same gin-bound method on a batch already on the device. Each is measured for
    --part_seconds right before the loop and again right after (the same machine load).
    Combined at k environment steps per gradient step, the parts allow
    k / (k / envs_rate + 1 / step_rate) environment steps/s.

Last line: `RESULT online_loop_vs_parts <loop env steps/s / parts env steps/s>` (target >= 0.8).
"""

import tempfile
import time

import gin
import jax
import numpy as np
from absl import app, flags

from scaled_ql import atari, configurables, runs, sharding, train_step, trainer

_GAME = flags.DEFINE_string("game", "Breakout", "Game to play.")
_VARIANT = flags.DEFINE_integer("variant", 0, "Index into atari.variants(game).")
_GRAD_STEPS = flags.DEFINE_integer("grad_steps", 600, "Gradient steps of the loop.")
_LOG_EVERY = flags.DEFINE_integer("log_every_steps", 50, "The loop's log window.")
_PART_SECONDS = flags.DEFINE_float("part_seconds", 10.0, "Each part, before and after the loop.")
GIN_FILE = "local_finetune_online.gin"


def configure() -> tuple[int, int, int]:
  """Binds the loop's gin configuration; returns its num_envs, k and batch size."""
  configurables.parse_gin(
    [GIN_FILE],
    [
      "NetworkConfig.torso = 'small'",
      f"train.game_names = ['{_GAME.value}']",
      f"online.OnlineSource.variant = {_VARIANT.value}",
      "online.OnlineSource.warmup_env_steps = 500",
      "online.OnlineSource.epsilon_start = 0.01",  # The policy acts from the first step.
      f"train.num_grad_steps = {_GRAD_STEPS.value}",
      f"train.log_every_steps = {_LOG_EVERY.value}",
      f"train.checkpoint_every_steps = {10 * _GRAD_STEPS.value}",
      "train.eval_fn = None",
    ],
  )
  return (
    gin.query_parameter("online.OnlineSource.num_envs"),
    gin.query_parameter("online.OnlineSource.env_steps_per_grad_step"),
    gin.query_parameter("train.global_batch_size"),
  )


def loop_rates(k: int) -> np.ndarray:
  """Env steps/s of each log window of the online loop (`trainer.train`), but the first."""
  with tempfile.TemporaryDirectory() as workdir:
    trainer.train(workdir)
    rows = runs.read_metrics(workdir)
  return k * np.array([row["steps_per_s"] for row in rows[1:]])


def envs_rate(num_envs: int, seconds: float) -> float:
  """Env steps/s of the loop's environments alone, random actions, for about `seconds`."""
  env = atari.VectorEnv(_GAME.value, num_envs, _VARIANT.value, atari.Protocol(), seed=0)
  rng = np.random.default_rng(0)
  env.reset()
  steps, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    for _ in range(50):
      env.step(rng.integers(0, env.num_actions, num_envs, dtype=np.int32))
    steps += 50 * num_envs
  elapsed = time.perf_counter() - start
  env.close()
  return steps / elapsed


def step_rate_fn(batch_size: int):
  """`rate(seconds)`: steps/s of the loop's train step alone, measured for about `seconds`."""
  learner = gin.get_bindings("train")["method"].build([_GAME.value])  # The loop's method.
  mesh = sharding.make_mesh()
  state = train_step.init_train_state(jax.random.PRNGKey(0), learner.init, learner.optimizer,
                                      mesh=mesh)  # fmt: skip
  step_fn = train_step.make_train_step(learner.loss_fn, learner.optimizer,
                                       learner.target_update_period, mesh=mesh)  # fmt: skip
  batch = sharding.put_batch(learner.example_batch(batch_size), mesh)
  holder = [step_fn(state, batch)[0]]  # Compiled.

  def rate(seconds: float) -> float:
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
      for _ in range(10):
        holder[0], metrics = step_fn(holder[0], batch)
      jax.block_until_ready(metrics)
      steps += 10
    return steps / (time.perf_counter() - start)

  return rate


def main(argv) -> None:
  del argv
  num_envs, k, batch_size = configure()
  measure_step = step_rate_fn(batch_size)
  env_rates, step_rates = [], []

  def measure_parts():
    env_rates.append(envs_rate(num_envs, _PART_SECONDS.value))
    step_rates.append(measure_step(_PART_SECONDS.value))

  measure_parts()
  loop = loop_rates(k)
  measure_parts()
  env_r, step_r = float(np.mean(env_rates)), float(np.mean(step_rates))
  parts = k / (k / env_r + 1 / step_r)
  loop_r = float(np.median(loop))
  backend = "AtariVectorEnv (C++)" if _VARIANT.value == 0 else "serial ALE envs"
  print(f"{_GAME.value} variant {_VARIANT.value}, {num_envs} envs ({backend}), {k} env steps "
        f"per gradient step, small CPU model, batch {batch_size}")  # fmt: skip
  print(f"  envs alone {env_r:,.0f} env steps/s; train step alone {step_r:.1f} steps/s "
        "(each before and after the loop)")  # fmt: skip
  print(f"  parts combined at {k}:1: {parts:,.1f} env steps/s")
  print(f"  online loop: {loop_r:,.1f} env steps/s (median of {len(loop)} windows of "
        f"{_LOG_EVERY.value} gradient steps; range {loop.min():,.1f}-{loop.max():,.1f})")  # fmt: skip
  print(f"RESULT online_loop_vs_parts {loop_r / parts:.3f}")


if __name__ == "__main__":
  app.run(main)
