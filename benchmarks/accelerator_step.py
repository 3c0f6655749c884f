"""Step efficiency on an accelerator: bfloat16 vs float32, MFU, and the training loop vs the step.

On the first device JAX sees (a GPU or a TPU core):
  * Scaled QL's step on ResNet-101 with the 40 training games' heads (as `trainer.train` builds
    it) at --resnet_batch examples, in float32 and in bfloat16: steps/s, model FLOP/s (XLA's cost
    analysis of the compiled step / step time), MFU = model FLOP/s / the device's dense bfloat16
    peak (PEAK_BF16_FLOPS; the float32 step is measured against it too), and peak memory (XLA's
    buffer assignment of the step, and the allocator's peak so far);
  * the DT-200M step (gin/models/dt_200m.gin) at --dt_batch windows, likewise;
  * `trainer.train` itself (sampler, host-to-device copy, step, metrics every --log_every_steps)
    on generated shards (random frames in the shard format, LOOP_GAMES) with ResNet-101 in
    bfloat16 at --resnet_batch, against the same step alone on one batch already on the device:
    does the host's data path keep up at accelerator speed? Medians of --log_every_steps windows,
    the loop's first (its compilation) left out;
  * with --profile_dir, a `jax.profiler` trace of the bfloat16 ResNet-101 steps (TensorBoard's
    profile plugin shows where the time goes).
The four steps are compiled before anything runs; one that does not fit the device's memory is
reported in one line, `error: ...` (`python -m scaled_ql.plan` gives per-device batches that fit).

    python benchmarks/accelerator_step.py [--resnet_batch=256] [--dt_batch=64]

Without an accelerator it says so in one line and measures nothing. Last lines (nan where not
measured): `RESULT accel_bf16_mfu <ResNet-101 bfloat16 MFU>`, `RESULT accel_bf16_vs_f32
<bfloat16 steps/s / float32 steps/s>`, `RESULT accel_loop_vs_step <loop steps/s / step alone>`.
Issue 23's targets on one H100 or H200: >= 0.25, >= 1.6, >= 0.9.
"""

import os
import sys
import tempfile
import time

import gin
import jax
import numpy as np
from absl import app, flags

from scaled_ql import compute, configurables, games, networks, runs, train_step, trainer, types
from scaled_ql import transformer as transformer_lib
from scaled_ql.data import shards
from scaled_ql.methods.decision_transformer import DecisionTransformer
from scaled_ql.methods.scaled_ql import ScaledQL

_RESNET_BATCH = flags.DEFINE_integer("resnet_batch", 256, "ResNet-101 examples per step.")
_DT_BATCH = flags.DEFINE_integer("dt_batch", 64, "DT-200M windows of 4 steps per step.")
_STEPS = flags.DEFINE_integer("steps", 20, "Steps per timed window of a step alone.")
_WINDOWS = flags.DEFINE_integer("windows", 5, "Timed windows of a step alone (median kept).")
_LOOP_STEPS = flags.DEFINE_integer("loop_steps", 300, "Steps of trainer.train (0: no loop).")
_LOG_EVERY = flags.DEFINE_integer("log_every_steps", 20, "Metric fetch period of the loop.")
_PROFILE_DIR = flags.DEFINE_string("profile_dir", None, "Trace the bfloat16 ResNet-101 steps here.")

LOOP_GAMES = ("Assault", "BeamRider", "Asterix", "Breakout")
ROWS_PER_GAME = 20_000
# Dense bfloat16 FLOP/s of one JAX device, by a substring of its `device_kind` (the first match),
# from the vendors' data sheets: NVIDIA H100 (SXM 989.4 TFLOP/s, PCIe 756), H200 (989.4: the
# H100's tensor cores), A100 (312); the Cloud TPU pages (cloud.google.com/tpu/docs/v3, v4, v5e,
# v5p, v6e): v3 123 per chip of 2 cores (one JAX device each), v4 275, v5e 197, v5p 459, v6e 918.
PEAK_BF16_FLOPS = (
  ("H100 PCIe", 756e12),
  ("H100", 989.4e12),
  ("H200", 989.4e12),
  ("A100", 312e12),
  ("TPU v3", 61.5e12),
  ("TPU v4", 275e12),
  ("TPU v5 lite", 197e12),
  ("TPU v5", 459e12),
  ("TPU v6 lite", 918e12),
)
BF16, F32 = compute.resolve("bfloat16"), compute.resolve("float32")


class DoesNotFit(ValueError):
  """A compiled step needs more memory than the device has."""


class Step:
  """A method's train step compiled for one device and one batch, and its measurements."""

  def __init__(self, name: str, learner, batch):
    self.name, self._learner, self._batch = name, learner, batch
    self._init = lambda: train_step.init_train_state(
      jax.random.PRNGKey(0), learner.init, learner.optimizer,
      target=learner.target_update_period is not None,
    )  # fmt: skip
    step_fn = train_step.make_train_step(
      learner.loss_fn, learner.optimizer, learner.target_update_period
    )
    batch_shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batch)
    self._compiled = step_fn.lower(jax.eval_shape(self._init), batch_shapes).compile()
    memory = self._compiled.memory_analysis()
    self.xla_peak_bytes = (memory.argument_size_in_bytes + memory.output_size_in_bytes
                           - memory.alias_size_in_bytes + memory.temp_size_in_bytes)  # fmt: skip
    limit = (jax.local_devices()[0].memory_stats() or {}).get("bytes_limit")
    if limit and self.xla_peak_bytes > limit:
      raise DoesNotFit(
        f"{name} needs {self.xla_peak_bytes / 2**30:.1f} GiB, the device has "
        f"{limit / 2**30:.1f} GiB: give a smaller batch (python -m scaled_ql.plan)"
      )
    cost = self._compiled.cost_analysis()
    self.flops = float((cost[0] if isinstance(cost, list | tuple) else cost)["flops"])

  def steps_per_s(self, steps: int, num_windows: int, profile_dir: str | None = None) -> np.ndarray:
    """Steps/s of `num_windows` windows of `steps` steps each, after one warm-up window."""
    holder, batch = [self._init()], jax.device_put(self._batch)

    def window():
      for _ in range(steps):
        holder[0], metrics = self._compiled(holder[0], batch)
      jax.block_until_ready(metrics)

    window()
    rates = []
    for _ in range(num_windows):
      start = time.perf_counter()
      window()
      rates.append(steps / (time.perf_counter() - start))
    if profile_dir:
      with jax.profiler.trace(profile_dir):
        window()
    return np.array(rates)


def peak_flops(device) -> float | None:
  return next((peak for kind, peak in PEAK_BF16_FLOPS if kind in device.device_kind), None)


def q_batch(batch_size: int, game_names) -> types.Batch:
  """Random frames and actions every game has, the games mixed."""
  rng = np.random.default_rng(0)
  obs = rng.integers(0, 256, (batch_size, 84, 84, 4), dtype=np.uint8)
  num_actions = min(games.num_actions(g) for g in game_names)
  return types.zeros_batch(batch_size)._replace(
    obs=obs, next_obs=np.roll(obs, 1, axis=0),
    action=rng.integers(0, num_actions, batch_size, dtype=np.int32),
    reward=rng.choice(np.float32([-1, 0, 1]), batch_size),
    discount=np.full(batch_size, 0.99**3, np.float32),
    game_id=rng.integers(0, len(game_names), batch_size, dtype=np.int32),
  )  # fmt: skip


def dt_batch(batch_size: int, game_names) -> types.WindowBatch:
  rng = np.random.default_rng(0)
  return types.zeros_window_batch(batch_size)._replace(
    obs=rng.integers(0, 256, (batch_size, 84, 84, 4), dtype=np.uint8),
    return_to_go=rng.integers(-5, 40, (batch_size, 4)).astype(np.float32),
    game_id=rng.integers(0, len(game_names), batch_size, dtype=np.int32),
  )


def generated_shards(root: str) -> str:
  """Random frames, actions and rewards of LOOP_GAMES in the shard format (one suffix per game,
  one unending episode): what the sampler reads, written in seconds where collecting ALE play
  would take minutes of the device's time."""
  rng = np.random.default_rng(0)
  for game in LOOP_GAMES:
    directory = shards.suffix_dir(root, game, 1, 0)
    os.makedirs(directory)
    columns = {
      "observation.u8": rng.integers(0, 256, (ROWS_PER_GAME, 84, 84), dtype=np.uint8),
      "action.i32": rng.integers(0, games.num_actions(game), ROWS_PER_GAME),
      "reward.f32": rng.choice([-1.0, 0.0, 1.0], ROWS_PER_GAME),
      "terminal.u8": np.zeros(ROWS_PER_GAME),
    }
    for name, dtype in shards.ROW_FILES:
      np.asarray(columns[name], dtype).tofile(os.path.join(directory, name))
    meta = {"num_rows": ROWS_PER_GAME, "contiguous_with_previous": False, "game": game}
    shards.write_meta(directory, meta)
  return root


def loop_vs_step(batch_size: int) -> float:
  """Median steps/s of `trainer.train`'s log windows over that of the same step alone."""
  with tempfile.TemporaryDirectory() as root:
    configurables.parse_gin(["base.gin"], [
      f"train.game_names = {list(LOOP_GAMES)}",
      f"data.ReplayDataset.shard_dir = '{generated_shards(os.path.join(root, 'shards'))}'",
      "data.ReplayDataset.num_io_threads = 8",
      "train.precision = 'bfloat16'",
      f"train.global_batch_size = {batch_size}",
      f"train.num_grad_steps = {_LOOP_STEPS.value}",
      f"train.log_every_steps = {_LOG_EVERY.value}",
      f"train.checkpoint_every_steps = {10 * _LOOP_STEPS.value}",
    ])  # fmt: skip
    method = gin.get_bindings("train")["method"]
    alone = Step("the loop's step", method.build(LOOP_GAMES, BF16), q_batch(batch_size, LOOP_GAMES))
    step_rate = np.median(
      alone.steps_per_s(_LOG_EVERY.value, _LOOP_STEPS.value // _LOG_EVERY.value)
    )
    workdir = os.path.join(root, "run")
    trainer.train(workdir)
    rows = runs.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    loop_rate = np.median([row["steps_per_s"] for row in rows if "steps_per_s" in row][1:])
  print(f"[loop] trainer.train on generated shards, ResNet-101 bfloat16, {len(LOOP_GAMES)} games, "
        f"batch {batch_size}: {loop_rate:.2f} steps/s; the step alone {step_rate:.2f}; "
        f"loop / step = {loop_rate / step_rate:.3f}")  # fmt: skip
  return loop_rate / step_rate


def _report(step: Step, rates: np.ndarray, batch_size: int, peak: float | None) -> float:
  """Prints a step's figures; returns its MFU (nan without a known peak)."""
  rate = float(np.median(rates))
  flops_per_s = rate * step.flops
  mfu = flops_per_s / peak if peak else float("nan")
  allocator = (jax.local_devices()[0].memory_stats() or {}).get("peak_bytes_in_use", 0)
  print(f"[{step.name}] batch {batch_size}: {rate:.2f} steps/s ({rates.min():.2f}-"
        f"{rates.max():.2f}), {rate * batch_size:,.0f} examples/s, {step.flops / 1e12:.2f} TFLOP "
        f"per step, {flops_per_s / 1e12:.1f} TFLOP/s, MFU {mfu:.3f}; peak memory "
        f"{step.xla_peak_bytes / 2**30:.1f} GiB (XLA), allocator's peak so far "
        f"{allocator / 2**30:.1f} GiB", flush=True)  # fmt: skip
  return mfu


def _results(mfu: float, bf16_vs_f32: float, loop_vs_step_ratio: float) -> None:
  print(f"RESULT accel_bf16_mfu {mfu:.3f}")
  print(f"RESULT accel_bf16_vs_f32 {bf16_vs_f32:.3f}")
  print(f"RESULT accel_loop_vs_step {loop_vs_step_ratio:.3f}")


def main(argv):
  del argv
  device = jax.devices()[0]
  if device.platform == "cpu":
    print(f"no accelerator: JAX sees only {jax.device_count()} CPU device(s); nothing measured")
    _results(float("nan"), float("nan"), float("nan"))
    return
  # A second run on the same machine reuses the compiled steps.
  jax.config.update("jax_compilation_cache_dir", os.path.join(tempfile.gettempdir(), "jax_cache"))
  peak = peak_flops(device)
  print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}, dense bfloat16 "
        f"peak {f'{peak / 1e12:.1f} TFLOP/s' if peak else 'unknown (add it to PEAK_BF16_FLOPS)'}")  # fmt: skip

  # -- Every step compiled (and its memory checked) before anything runs.
  configurables.parse_gin(["models/dt_200m.gin"], [])
  dt_config = gin.get_configurable(transformer_lib.TransformerConfig)()
  resnet, dt = (
    ScaledQL(network=networks.NetworkConfig(torso="resnet101")),
    DecisionTransformer(dt_config),
  )
  batches = {"resnet101": q_batch(_RESNET_BATCH.value, games.TRAIN_GAMES),
             "dt_200m": dt_batch(_DT_BATCH.value, games.TRAIN_GAMES)}  # fmt: skip
  try:
    steps = {
      (model, config.dtype.name): Step(f"{model} {config.dtype.name}",
                                       method.build(games.TRAIN_GAMES, config), batches[model])
      for model, method in (("resnet101", resnet), ("dt_200m", dt)) for config in (BF16, F32)
    }  # fmt: skip
  except DoesNotFit as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)

  # -- The steps alone, then the loop.
  mfu, rates = {}, {}
  for (model, dtype), step in steps.items():
    profile = _PROFILE_DIR.value if (model, dtype) == ("resnet101", "bfloat16") else None
    rates[model, dtype] = step.steps_per_s(_STEPS.value, _WINDOWS.value, profile)
    mfu[model, dtype] = _report(step, rates[model, dtype], len(batches[model].obs), peak)
  for model in batches:
    ratio = np.median(rates[model, "bfloat16"]) / np.median(rates[model, "float32"])
    print(f"[{model}] bfloat16 / float32 steps/s = {ratio:.3f}")
  loop = loop_vs_step(_RESNET_BATCH.value) if _LOOP_STEPS.value else float("nan")
  bf16_vs_f32 = np.median(rates["resnet101", "bfloat16"]) / np.median(rates["resnet101", "float32"])
  _results(mfu["resnet101", "bfloat16"], bf16_vs_f32, loop)


if __name__ == "__main__":
  app.run(main)
