"""The trainer's configuration checks and checkpoints (the loop runs in end_to_end_test.py)."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from scaled_ql import atari, checkpointing, networks, optimizers, runs, trainer
from scaled_ql.data import replay_buffer
from scaled_ql.methods.scaled_ql import ScaledQL

SMALL = networks.NetworkConfig(torso="small", widths=(8, 8, 8, 8), projection_dim=16)


def test_workdir_uri_is_refused_before_any_work(tmp_path):
  with pytest.raises(ValueError, match="URIs are not supported"):
    trainer.train("gs://bucket/run", game_names=["Pong"], dataset_fn=None, method=None)


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


def _played_buffer(local_batch_size: int, seed: int) -> replay_buffer.ReplayBuffer:
  """A replay buffer filled by random play of real Breakout (2 envs, 30-step episodes)."""
  buffer = replay_buffer.ReplayBuffer(
    capacity=400, num_envs=2, n_step=3, seed=seed, local_batch_size=local_batch_size
  )
  protocol = atari.Protocol(max_episode_steps=30)
  rng = np.random.default_rng(0)
  with atari.VectorEnv("Breakout", 2, protocol=protocol, seed=0) as env:
    obs = env.reset()
    for _ in range(150):
      action = rng.integers(env.num_actions, size=2)
      next_obs, reward, terminated, truncated = env.step(action)
      buffer.add(obs, action, reward, terminated | truncated)
      obs = next_obs
  return buffer


def test_a_source_fed_by_acting_is_checkpointed_and_restored(tmp_path):
  workdir, sources = str(tmp_path / "run"), []

  def dataset_fn(game_names, local_batch_size, seed, process_index, process_count):
    del game_names, process_index, process_count
    # The first run plays; a resumed run starts empty and must get the rows from the checkpoint.
    source = (
      _played_buffer(local_batch_size, seed)
      if not sources
      else replay_buffer.ReplayBuffer(400, 2, seed=seed, local_batch_size=local_batch_size)
    )
    sources.append(source)
    return source

  method = ScaledQL(network=SMALL, target_update_period=2)
  common = dict(game_names=["Breakout"], dataset_fn=dataset_fn, method=method,
                global_batch_size=4, log_every_steps=1, checkpoint_every_steps=3)  # fmt: skip
  trainer.train(workdir, num_grad_steps=3, **common)
  saved = sources[0].state()
  trainer.train(workdir, num_grad_steps=5, **common)
  restored = sources[1]
  for key, value in saved.items():
    np.testing.assert_array_equal(restored.state()[key], value, err_msg=key)
  assert restored.batch(7).obs.shape == (4, 84, 84, 4)
  rows = [r["step"] for r in runs.read_metrics(workdir) if "loss" in r]
  assert rows == [1, 2, 3, 4, 5]
