"""The trainer's configuration checks and checkpoints (the loop runs in end_to_end_test.py)."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from scaled_ql import checkpointing, networks, online, optimizers, runs, trainer, types
from scaled_ql.data import source
from scaled_ql.methods.bc import BC
from scaled_ql.methods.scaled_ql import ScaledQL

SMALL = networks.NetworkConfig(torso="small", widths=(8, 8, 8, 8), projection_dim=16)


def test_an_unwritable_workdir_is_refused_before_any_work(tmp_path):
  not_a_directory = tmp_path / "file"
  not_a_directory.write_text("")
  with pytest.raises(PermissionError, match="file/run is not writable"):
    trainer.train(str(not_a_directory / "run"), game_names=["Pong"], dataset_fn=None, method=None)


class _State(NamedTuple):
  step: jax.Array
  w: jax.Array


def test_checkpoints_keep_the_latest_n(tmp_path):
  checkpointer = checkpointing.Checkpointer(str(tmp_path), max_to_keep=2)
  assert not checkpointing.has_checkpoint(str(tmp_path))
  for step in range(1, 5):
    checkpointer.save(_State(jnp.int32(step), jnp.full(3, step, jnp.float32)))
  checkpointer.wait()
  assert checkpointer.all_steps() == [3, 4] and checkpointing.has_checkpoint(str(tmp_path))
  restored = checkpointer.restore(_State(jnp.int32(0), jnp.zeros(3, jnp.float32)))
  np.testing.assert_array_equal(restored.w, [4, 4, 4])
  assert checkpointer.restore_data(4) == {}  # An offline source saves no data item.


def test_a_data_sources_state_is_saved_with_the_checkpoint(tmp_path):
  checkpointer = checkpointing.Checkpointer(str(tmp_path))
  rows = np.arange(12, dtype=np.uint8).reshape(3, 4)
  checkpointer.save(_State(jnp.int32(7), jnp.zeros(3)), {"rows": rows, "count": np.int64(3)})
  checkpointer.wait()
  data = checkpointer.restore_data(7)
  np.testing.assert_array_equal(data["rows"], rows)
  assert int(data["count"]) == 3


class _SmallFrames(source.DataSource):
  """Batches of 42x42 frames, which the Q-network (84x84) cannot take."""

  closed = False

  def __init__(self, game_names, local_batch_size, seed, process_index=0, process_count=1):
    del game_names, seed, process_index, process_count
    self.batch_size = local_batch_size

  def iterate(self, start_step, current_policy=None):
    n = self.batch_size
    frames = np.zeros((n, 42, 42, 4), np.uint8)
    while True:
      yield types.Batch(frames, np.zeros(n, np.int32), np.zeros(n, np.float32),
                        np.ones(n, np.float32), frames, np.zeros(n, np.int32))  # fmt: skip

  def close(self):
    _SmallFrames.closed = True


def test_batches_the_method_cannot_take_stop_the_run_before_anything_is_written(tmp_path):
  workdir = str(tmp_path / "run")
  with pytest.raises(ValueError, match="do not fit the method"):
    trainer.train(workdir, game_names=["Pong"], dataset_fn=_SmallFrames,
                  method=ScaledQL(network=SMALL), global_batch_size=4, num_grad_steps=3)  # fmt: skip
  assert _SmallFrames.closed
  assert not runs.is_run(workdir) and not checkpointing.has_checkpoint(workdir)


class _ShardSource(source.DataSource):
  """Batches whose game_id is the data shard that made them."""

  def __init__(self, game_names, local_batch_size, seed, process_index=0, process_count=1):
    self.shard, self.batch_size, self.num_shards = process_index, local_batch_size, process_count

  def iterate(self, start_step, current_policy=None):
    while True:
      n = self.batch_size
      frames = np.zeros((n, 84, 84, 4), np.uint8)
      yield types.Batch(frames, np.zeros(n, np.int32), np.zeros(n, np.float32),
                        np.ones(n, np.float32), frames, np.full(n, self.shard, np.int32))  # fmt: skip


def test_one_process_holding_two_data_shards_makes_their_batches_end_to_end():
  dataset = trainer._make_dataset(_ShardSource, ["Pong"], 8, seed=0, num_shards=2)
  assert [s.num_shards for s in dataset.sources] == [2, 2]
  batch = next(dataset.iterate(0))
  np.testing.assert_array_equal(batch.game_id, [0, 0, 0, 0, 1, 1, 1, 1])
  assert batch.obs.shape == (8, 84, 84, 4)


def test_data_shards_that_do_not_divide_the_batch_are_refused(tmp_path):
  with pytest.raises(ValueError, match="data_shards=3 must be a multiple"):
    trainer.train(str(tmp_path), game_names=["Pong"], dataset_fn=_ShardSource,
                  method=ScaledQL(network=SMALL), global_batch_size=8, data_shards=3)  # fmt: skip


def test_unknown_game_is_named():
  with pytest.raises(ValueError, match="Pongg"):
    ScaledQL(network=SMALL).build(["Pongg"])


def test_gradients_are_clipped_to_max_grad_norm_before_adam():
  params = {"w": jnp.zeros(4)}
  grads = {"w": jnp.array([30.0, 40.0, 0.0, 0.0])}  # Global norm 50.
  optimizer = optimizers.make_optimizer(max_grad_norm=5.0, adam_b2=0.9)
  _, opt_state = optimizer.update(grads, optimizer.init(params), params)
  adam_state = next(s for s in jax.tree.leaves(opt_state, is_leaf=lambda s: hasattr(s, "nu"))
                    if hasattr(s, "nu"))  # fmt: skip
  # Adam's second moment saw the clipped gradient (3, 4, 0, 0): (1 - b2) * g^2.
  np.testing.assert_allclose(adam_state.nu["w"], 0.1 * np.array([9.0, 16.0, 0.0, 0.0]), rtol=1e-6)
  assert isinstance(optimizers.make_optimizer(), optax.GradientTransformation)


class _CountingSource(online.OnlineSource):
  """Online training on real Breakout, keeping every policy the trainer hands it."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs, num_envs=2, buffer_capacity=400, env_steps_per_grad_step=2,
                     warmup_env_steps=80, epsilon_start=0.5, epsilon_end=0.5, max_episode_steps=30)  # fmt: skip
    self.policies = []

  def iterate(self, start_step, current_policy=None):
    def counted():
      self.policies.append(current_policy())
      return self.policies[-1]

    return super().iterate(start_step, counted)


@pytest.mark.parametrize("method", [ScaledQL(network=SMALL, target_update_period=2), BC(SMALL)])
def test_a_source_that_acts_is_checkpointed_and_restored(tmp_path, method):
  workdir, sources = str(tmp_path / "run"), []

  def dataset_fn(**kwargs):
    sources.append(_CountingSource(**kwargs))
    return sources[-1]

  common = dict(game_names=["Breakout"], dataset_fn=dataset_fn, method=method,
                global_batch_size=4, log_every_steps=1, checkpoint_every_steps=3)  # fmt: skip
  trainer.train(workdir, num_grad_steps=3, **common)
  first = sources[0]
  assert len(first.policies) == 3 and len({id(p) for p in first.policies}) == 3
  saved = checkpointing.Checkpointer(workdir).restore_data(3)
  np.testing.assert_array_equal(saved["add_count"], first.state()["add_count"])
  # The resumed run's source starts from the checkpoint's rows (no second warm-up) and plays
  # one step per gradient step: its first row opens a new episode (3 padding rows, the cut one
  # was ended), its second may too.
  trainer.train(workdir, num_grad_steps=5, **common)
  added = sources[1].state()["add_count"] - saved["add_count"]
  assert np.isin(added, [5, 8]).all(), added
  assert len(sources[1].policies) == 2
  rows = [r["step"] for r in runs.read_metrics(workdir) if "loss" in r]
  assert rows == [1, 2, 3, 4, 5]
