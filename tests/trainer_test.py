"""The trainer's configuration checks and checkpoints (the loop runs in end_to_end_test.py)."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from scaled_ql import checkpointing, networks, optimizers, trainer
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
