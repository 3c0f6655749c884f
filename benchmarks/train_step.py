"""Train-step efficiency: FLOP/s against a plain 3x3 conv roof, and loop vs step alone.

For the small CPU model and ResNet-18 at batch 32 (one device), both with the heads of
LOOP_GAMES and built by `methods.ScaledQL.build`, as the training loop builds them:
  * step FLOP/s = FLOPs from XLA's cost analysis of the compiled step / measured step time;
  * roof = FLOP/s of a plain 3x3 convolution of the model's own stage-0 shape
    ([B, 21, 21, C0] -> C0), measured in the same run the same way: the fastest of
    alternating windows, each as long as a window of `log_every_steps` steps;
  * the real training loop's steps/s (`trainer.train` on real ALE data in the DQN Replay
    format through `data.ReplayDataset`: sampling, host-to-device, step, metric fetch every
    `log_every_steps`, progress bar), from its own metrics.jsonl, divided by steps/s of the
    same step alone on one real batch already on the device. Both are the median over
    windows of `log_every_steps` steps of equally long continuous runs (the step alone runs
    before and after the loop): the fastest of many short windows would compare the machine's
    best moments with the loop's typical ones (on this machine the fastest 10-step window of
    the small step is 1.25x its median).
Then the Decision Transformer's step (`methods.DecisionTransformer.build`, the CPU shape of
gin/models/dt_cpu.gin unless --dt_model) at the same batch of 4-step windows: its FLOP/s
against a plain matmul of the model's width, [B * 156 tokens, D] x [D, D], measured in the same
run the same way. Then the compile time and parameter count of the ResNet-101 step (not run).

    python benchmarks/train_step.py [--models=small,resnet18] [--batch_size=32]

Last line: `RESULT train_step_roof_fraction <min over the models and the DT of step FLOP/s /
roof FLOP/s>`.
"""

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import gin
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from scaled_ql import (
  configurables,
  data,
  games,
  networks,
  runs,
  sharding,
  train_step,
  trainer,
  transformer,
  types,
)
from scaled_ql.methods.decision_transformer import DecisionTransformer
from scaled_ql.methods.scaled_ql import ScaledQL

_MODELS = flags.DEFINE_list("models", ["small", "resnet18"], "Torsos to measure.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Global batch size.")
_SECONDS = flags.DEFINE_float("seconds", 20.0, "Time budget per model (alternating windows).")
_LOG_EVERY = flags.DEFINE_integer("log_every_steps", 10, "Metric fetch period in the loop.")
_RESNET101 = flags.DEFINE_bool("resnet101", True, "Compile (not run) the ResNet-101 step.")
_LOOP_STEPS = flags.DEFINE_integer("loop_steps", 300, "Steps of the real training loop per model.")
_DT_MODEL = flags.DEFINE_string("dt_model", "models/dt_cpu.gin", "The DT's shape ('': no DT).")

LOOP_GAMES = ("Assault", "BeamRider", "Asterix", "Breakout")
DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".cache", "train_step_data")


def _flops(compiled) -> float:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, list | tuple):  # Older jax: one dict per program.
    analysis = analysis[0]
  return float(analysis["flops"])


def _best_windows(fns: list[Callable[[], object]], seconds: float) -> list[float]:
  """Seconds per window of each fn, alternating them; the fastest window of each.

  Each fn runs one window (several calls, blocking at its end). Alternating the fns and
  keeping each one's fastest window compares them under the same, least-disturbed load
  on a shared machine.
  """
  for fn in fns:
    fn()  # Warm-up.
  best, start = [np.inf] * len(fns), time.perf_counter()
  while time.perf_counter() - start < seconds or not np.all(np.isfinite(best)):
    for i, fn in enumerate(fns):
      t0 = time.perf_counter()
      fn()
      best[i] = min(best[i], time.perf_counter() - t0)
  return best


def _lasting(make_window: Callable, seconds: float):
  """make_window(calls) -> (window, flops), with `calls` such that a window lasts `seconds`.

  A roof's window is as long as the step's: ten calls of a sub-millisecond matmul mostly time
  their dispatch (the CPU DT's matmul measured ~258 GFLOP/s in 10-call windows, 345-391 in
  windows as long as the step's), and windows of equal length see the same machine load.
  """
  window, _ = make_window(1)
  window()  # Warm-up.
  t0 = time.perf_counter()
  window()
  return make_window(max(1, round(seconds / (time.perf_counter() - t0))))


def _seconds(window: Callable[[], object]) -> float:
  """Seconds of one call of `window`, after a warm-up call."""
  window()
  t0 = time.perf_counter()
  window()
  return time.perf_counter() - t0


def _window_rates(window: Callable[[], object], steps_per_window: int, num_windows: int):
  """steps/s of each of `num_windows` consecutive calls of `window`."""
  rates = []
  for _ in range(num_windows):
    t0 = time.perf_counter()
    window()
    rates.append(steps_per_window / (time.perf_counter() - t0))
  return np.array(rates)


def random_batch(batch_size: int, num_games: int, num_actions: int, seed: int = 0) -> types.Batch:
  rng = np.random.default_rng(seed)
  obs = rng.integers(0, 256, (batch_size, 84, 84, 4), dtype=np.uint8)
  return types.Batch(
    obs=obs,
    action=rng.integers(0, num_actions, batch_size).astype(np.int32),
    reward=rng.choice([-1.0, 0.0, 1.0], batch_size).astype(np.float32),
    discount=np.full(batch_size, 0.99**3, np.float32),
    next_obs=np.roll(obs, 1, axis=0),
    game_id=rng.integers(0, num_games, batch_size).astype(np.int32),
  )


def real_data() -> str:
  """Converted shards of real ALE data (uniform-random behaviour), made once and cached."""
  shard_dir = os.path.join(DATA_DIR, "shards")
  if not os.path.isdir(shard_dir):
    games_flag = "--games=" + ",".join(LOOP_GAMES)
    for args in (
      [
        "data_prep.collect",
        f"--output_dir={DATA_DIR}/replay",
        games_flag,
        "--num_checkpoints=1",
        "--checkpoint_size=20000",
      ],
      [
        "data_prep.convert",
        f"--replay_dir={DATA_DIR}/replay",
        f"--shard_dir={shard_dir}",
        games_flag,
      ],
    ):
      subprocess.run([sys.executable, "-m", *args], check=True, capture_output=True)
  return shard_dir


def loop_window_rates(torso: str, shard_dir: str) -> np.ndarray:
  """Steps/s of each log window of `trainer.train` itself on real data, from its metrics.jsonl.

  The first window, which holds the compilation, is left out.
  """
  with tempfile.TemporaryDirectory() as workdir:
    configurables.parse_gin(
      ["base.gin"],
      [
        f"NetworkConfig.torso = '{torso}'",
        f"train.game_names = {list(LOOP_GAMES)}",
        f"data.ReplayDataset.shard_dir = '{shard_dir}'",
        f"train.global_batch_size = {_BATCH_SIZE.value}",
        f"train.num_grad_steps = {_LOOP_STEPS.value}",
        f"train.log_every_steps = {_LOG_EVERY.value}",
        f"train.checkpoint_every_steps = {10 * _LOOP_STEPS.value}",
      ],
    )
    trainer.train(workdir)
    rates = [row["steps_per_s"] for row in runs.read_jsonl(os.path.join(workdir, "metrics.jsonl"))]
  return np.array(rates[1:])


def _conv_window(batch_size: int, channels: int, calls: int, with_grads: bool = False):
  """A window of `calls` jitted 3x3 SAME convs [B, 21, 21, C] -> C, and its FLOPs.

  With grads: forward plus both gradients (input and filter), the conv's training cost.
  """
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(batch_size, 21, 21, channels)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, channels, channels)), jnp.float32)
  dimension_numbers = ("NHWC", "HWIO", "NHWC")

  def conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dimension_numbers)

  fn = conv
  if with_grads:
    fn = jax.grad(lambda x, w: jnp.sum(jnp.square(conv(x, w))), argnums=(0, 1))
  compiled = jax.jit(fn).lower(x, w).compile()

  def window():
    for _ in range(calls):
      out = compiled(x, w)
    jax.block_until_ready(out)

  return window, _flops(compiled) * calls


def _build(torso: str, batch_size: int, shard_dir: str):
  """The step `trainer.train` runs for LOOP_GAMES (its learner), and one real batch."""
  learner = ScaledQL(network=networks.NetworkConfig(torso=torso)).build(LOOP_GAMES)
  mesh = sharding.make_mesh()
  dataset = data.ReplayDataset(shard_dir, LOOP_GAMES, runs=[1], local_batch_size=batch_size)
  try:
    batch = dataset.batch(0)
  finally:
    dataset.close()  # Its I/O threads and row pool must not share the measured cores.
  state = train_step.init_train_state(
    jax.random.PRNGKey(0), learner.init, learner.optimizer, mesh=mesh
  )
  step_fn = train_step.make_train_step(learner.loss_fn, learner.optimizer, 2000, mesh=mesh)
  return state, step_fn, batch


def measure(torso: str, mesh, shard_dir: str) -> float:
  """Prints the figures for one torso; returns step FLOP/s over conv-roof FLOP/s."""
  batch_size, log_every = _BATCH_SIZE.value, _LOG_EVERY.value
  state, step_fn, host_batch = _build(torso, batch_size, shard_dir)
  device_batch = sharding.put_batch(host_batch, mesh)
  t0 = time.perf_counter()
  compiled = step_fn.lower(state, device_batch).compile()
  compile_seconds = time.perf_counter() - t0
  step_flops = _flops(compiled)
  holder = [state]

  def step_window():  # The step alone on a batch already on the device.
    for _ in range(log_every):
      holder[0], metrics = compiled(holder[0], device_batch)
    jax.block_until_ready(metrics)

  width = networks.NetworkConfig(torso=torso).resolved().widths[0]
  seconds = _seconds(step_window)
  conv_window, conv_flops = _lasting(lambda n: _conv_window(batch_size, width, n), seconds)
  grads_window, grads_flops = _lasting(
    lambda n: _conv_window(batch_size, width, n, with_grads=True), seconds
  )
  step_seconds, conv_seconds, grads_seconds = _best_windows(
    [step_window, conv_window, grads_window], _SECONDS.value
  )
  # The step alone as long as the loop, right before and right after it (same machine load).
  num_windows = _LOOP_STEPS.value // log_every - 1
  alone_before = _window_rates(step_window, log_every, num_windows)
  loop_rates = loop_window_rates(torso, shard_dir)
  alone = np.concatenate([alone_before, _window_rates(step_window, log_every, num_windows)])
  loop_rate, step_alone = np.median(loop_rates), np.median(alone)
  step_rate, roof = step_flops * log_every / step_seconds, conv_flops / conv_seconds
  train_roof = grads_flops / grads_seconds
  print(
    f"[{torso}] batch {batch_size}: compile {compile_seconds:.1f} s, step {step_flops / 1e9:.2f} GFLOP"
  )
  print(
    f"[{torso}]   step alone {log_every / step_seconds:.2f} steps/s = {step_rate / 1e9:.1f} GFLOP/s"
  )
  print(
    f"[{torso}]   conv roof 3x3 [{batch_size},21,21,{width}]->{width}: {roof / 1e9:.1f} GFLOP/s"
  )
  print(f"[{torso}]   step / conv roof = {step_rate / roof:.3f}")
  print(
    f"[{torso}]   (same conv with both gradients: {train_roof / 1e9:.1f} GFLOP/s; "
    f"step / that = {step_rate / train_roof:.3f})"
  )
  print(
    f"[{torso}]   trainer.train on real data (sampler + step + log every {log_every}) "
    f"{loop_rate:.2f} steps/s; loop / step alone ({step_alone:.2f}) = {loop_rate / step_alone:.3f}"
  )
  print(
    f"[{torso}]   (medians of {log_every}-step windows; fastest windows: loop "
    f"{loop_rates.max():.2f}, step alone {alone.max():.2f}, ratio {loop_rates.max() / alone.max():.3f})"
  )
  return step_rate / roof


def _matmul_window(rows: int, width: int, calls: int):
  """A window of `calls` jitted [rows, width] x [width, width] matmuls, and its FLOPs."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(rows, width)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(width, width)), jnp.float32)
  compiled = jax.jit(jnp.matmul).lower(x, w).compile()

  def window():
    for _ in range(calls):
      out = compiled(x, w)
    jax.block_until_ready(out)

  return window, _flops(compiled) * calls


def measure_dt(gin_file: str, mesh) -> float:
  """Prints the DT step's figures; returns its FLOP/s over the matmul roof's."""
  configurables.parse_gin([gin_file], [])
  config = gin.get_configurable(transformer.TransformerConfig)()
  batch_size, log_every = _BATCH_SIZE.value, _LOG_EVERY.value
  learner = DecisionTransformer(transformer=config).build(LOOP_GAMES)
  rng = np.random.default_rng(0)
  batch = types.zeros_window_batch(batch_size)._replace(
    obs=rng.integers(0, 256, (batch_size, 84, 84, 4), dtype=np.uint8),
    return_to_go=rng.integers(-5, 40, (batch_size, 4)).astype(np.float32),
    game_id=rng.integers(0, len(LOOP_GAMES), batch_size).astype(np.int32),
  )
  state = train_step.init_train_state(
    jax.random.PRNGKey(0), learner.init, learner.optimizer, mesh=mesh, target=False
  )
  step_fn = train_step.make_train_step(learner.loss_fn, learner.optimizer, None, mesh=mesh)
  device_batch = sharding.put_batch(batch, mesh)
  compiled = step_fn.lower(state, device_batch).compile()
  step_flops, holder = _flops(compiled), [state]

  def step_window():
    for _ in range(log_every):
      holder[0], metrics = compiled(holder[0], device_batch)
    jax.block_until_ready(metrics)

  tokens = batch_size * config.context_steps * config.tokens_per_step
  matmul_window, matmul_flops = _lasting(
    lambda n: _matmul_window(tokens, config.width, n), _seconds(step_window)
  )
  step_seconds, matmul_seconds = _best_windows([step_window, matmul_window], _SECONDS.value)
  step_rate, roof = step_flops * log_every / step_seconds, matmul_flops / matmul_seconds
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  name = os.path.basename(gin_file).removesuffix(".gin")
  print(
    f"[{name}] {config.num_layers} layers, width {config.width}, {num_params / 1e6:.2f}M "
    f"parameters, batch {batch_size} x {config.context_steps * config.tokens_per_step} tokens: "
    f"step {step_flops / 1e9:.2f} GFLOP, {log_every / step_seconds:.2f} steps/s = "
    f"{step_rate / 1e9:.1f} GFLOP/s"
  )
  print(
    f"[{name}]   matmul roof [{tokens},{config.width}]x[{config.width},{config.width}]: "
    f"{roof / 1e9:.1f} GFLOP/s; step / roof = {step_rate / roof:.3f}"
  )
  return step_rate / roof


def compile_resnet101(mesh) -> None:
  num_actions = [games.num_actions(game) for game in games.TRAIN_GAMES]
  config = networks.NetworkConfig(torso="resnet101")
  counts = networks.count_params(config, num_actions)
  learner = ScaledQL(network=config).build(games.TRAIN_GAMES)
  batch = random_batch(_BATCH_SIZE.value, len(num_actions), min(num_actions))
  state = jax.eval_shape(
    lambda: train_step.init_train_state(jax.random.PRNGKey(0), learner.init, learner.optimizer)
  )
  step_fn = train_step.make_train_step(learner.loss_fn, learner.optimizer, 2000, mesh=mesh)
  t0 = time.perf_counter()
  compiled = step_fn.lower(state, jax.eval_shape(lambda: sharding.put_batch(batch, mesh))).compile()
  print(
    f"[resnet101] {len(num_actions)} training games: {counts['total'] / 1e6:.1f}M parameters "
    f"(allocated {counts['total_allocated'] / 1e6:.1f}M); train-step compile "
    f"{time.perf_counter() - t0:.1f} s at batch {_BATCH_SIZE.value}, "
    f"{_flops(compiled) / 1e9:.0f} GFLOP per step"
  )


def main(argv):
  del argv
  mesh = sharding.make_mesh()
  print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}, jax {jax.__version__}")
  shard_dir = real_data()
  fractions = [measure(torso, mesh, shard_dir) for torso in _MODELS.value]
  if _DT_MODEL.value:
    fractions.append(measure_dt(_DT_MODEL.value, mesh))
  if _RESNET101.value:
    compile_resnet101(mesh)
  print(f"RESULT train_step_roof_fraction {min(fractions):.3f}")


if __name__ == "__main__":
  app.run(main)
