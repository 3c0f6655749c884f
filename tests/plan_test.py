"""The memory planner: its figures are those of a compile of the trainer's step, its line
predicts other batches, bad input is refused in one line before anything compiles."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaled_ql import compute, configurables, games, networks, plan, train_step
from scaled_ql.cli import UserError
from scaled_ql.methods.scaled_ql import ScaledQL

TINY = networks.NetworkConfig(torso="small", widths=(8, 8, 8, 8), projection_dim=16)
TRAINING = plan.Training("tiny", ScaledQL(network=TINY), ("Breakout", "Pong"), 64, 0.0)


def test_the_planners_figures_are_a_measured_compiles_and_its_line_predicts_other_batches():
  small, large = (plan.footprint(TRAINING, compute.FLOAT32, b) for b in (4, 16))

  # The same step compiled here, from real arrays, as the trainer makes it.
  learner = TRAINING.method.build(TRAINING.game_names)
  state = train_step.init_train_state(jax.random.PRNGKey(0), learner.init, learner.optimizer)
  batch = learner.example_batch(4)
  step_fn = train_step.make_train_step(learner.loss_fn, learner.optimizer, 2000)
  compiled = step_fn.lower(state, jax.tree.map(jnp.asarray, batch)).compile()
  memory = compiled.memory_analysis()
  assert small.argument_bytes == memory.argument_size_in_bytes
  assert small.temp_bytes == memory.temp_size_in_bytes
  assert small.flops == compiled.cost_analysis()["flops"]
  # The arguments are the train state and the batch, byte for byte.
  nbytes = sum(np.asarray(x).nbytes for x in jax.tree.leaves((state, batch)))
  assert small.argument_bytes == nbytes
  assert small.alias_bytes > 0.9 * small.output_bytes  # the state is donated

  line = plan.Line.through(small, large)
  measured = plan.footprint(TRAINING, compute.FLOAT32, 64)
  # XLA's own line predicts its compile at 64; the plan's, with autodiff's saved activations per
  # example, is conservative (fusion recomputes some of them).
  xla_at_64 = line.fixed_bytes + 64 * line.xla_per_example_bytes
  assert abs(xla_at_64 - measured.peak_bytes) < 0.1 * measured.peak_bytes
  assert measured.peak_bytes <= line.peak_bytes(64) < 2 * measured.peak_bytes
  # A memory that holds 32 examples but not 64 gives 32 per device.
  memory_bytes = (line.peak_bytes(32) + line.peak_bytes(64)) / 2
  assert plan.largest_batch(line, memory_bytes, 64) == 32
  assert plan.largest_batch(line, line.fixed_bytes / 2, 64) is None  # not even the state


def test_bfloat16_and_remat_shrink_the_activations():
  method = ScaledQL(network=networks.NetworkConfig(torso="resnet18"))

  def per_example(config):  # traced, not compiled
    learner = method.build(TRAINING.game_names, config)
    state = jax.eval_shape(
      lambda: train_step.init_train_state(jax.random.PRNGKey(0), learner.init, learner.optimizer)
    )
    small, large = (
      plan.activation_bytes(learner, state, learner.example_batch(n)) for n in (4, 16)
    )
    return (large - small) / 12

  float32 = per_example(compute.FLOAT32)
  assert per_example(compute.resolve("bfloat16")) < 0.6 * float32  # measured: 0.54
  assert per_example(compute.resolve("float32", remat=True)) < 0.6 * float32  # 0.51


def test_devices_are_named_or_sized_and_the_batch_must_divide():
  assert plan.parse_devices(["v3", "24GiB"]) == {
    "TPU v3 core 16 GiB": 16 * 2**30,
    "24GiB": 24 * 2**30,
  }
  with pytest.raises(UserError, match=r"unknown device 'v5'.*known: v3 \(TPU v3 core, 16 GiB\)"):
    plan.parse_devices(["v5"])
  with pytest.raises(UserError, match="--per_device_batch=12 does not divide the global batch 512"):
    plan.check_per_device_batch(12, 512)
  plan.check_per_device_batch(16, 512)


@pytest.mark.parametrize(
  "flag, message",
  [
    ("--per_device_batch=3", "error: --per_device_batch=3 does not divide the global batch 8"),
    ("--devices=v3,tpu5", "error: unknown device 'tpu5' in --devices; known: v3"),
  ],
)
def test_bad_input_is_one_line_before_compiling(flag, message):
  result = subprocess.run(
    [sys.executable, "-m", "scaled_ql.plan", "--gin_file=debug.gin", flag],
    capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith(message)
  assert "|" not in result.stdout  # no table: nothing compiled


# docs/accelerators.md plans pretrain_near_optimal.gin's step for these files: the same network,
# method class, games and global batch (only loss weights or the data differ).
SAME_STEP_AS_NEAR_OPTIMAL = [
  "pretrain_low_quality.gin", "ablations/low_quality.gin", "ablations/no_cql.gin",
  "ablations/cql_alpha_0_01.gin", "ablations/cql_alpha_0_1.gin", "ablations/cql_alpha_0_5.gin",
  "ablations/cql_alpha_1_0.gin", "ablations/bc_rl_0_25.gin", "ablations/bc_rl_0_5.gin",
  "ablations/bc_rl_0_75.gin",
]  # fmt: skip


def _training(*gin_files: str) -> plan.Training:
  configurables.parse_gin(list(gin_files), ["data.ReplayDataset.shard_dir = '/nonexistent'"])
  return plan.configured_training(gin_files[0])


def _step_identity(training: plan.Training) -> tuple:
  return (type(training.method), training.method.network, training.game_names,
          training.global_batch_size)  # fmt: skip


@pytest.mark.parametrize("gin_file", SAME_STEP_AS_NEAR_OPTIMAL)
def test_the_paper_files_planned_through_near_optimal_share_its_step(gin_file):
  base = _step_identity(_training("pretrain_near_optimal.gin"))
  assert base[2:] == (tuple(games.TRAIN_GAMES), 512)
  assert _step_identity(_training(gin_file)) == base


def test_filtered_bc_trains_bcs_step():
  bc = _step_identity(_training("baselines/bc.gin"))
  assert bc[0].__name__ == "BC" and _step_identity(_training("baselines/filtered_bc.gin")) == bc
