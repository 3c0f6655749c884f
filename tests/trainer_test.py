"""The trainer's configuration checks (the loop itself runs in end_to_end_test.py)."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from scaled_ql import checkpointing, losses, networks, optimizers, trainer

SMALL = networks.NetworkConfig(torso="small", widths=(8, 8, 8, 8), projection_dim=16)


def test_loss_and_network_must_agree():
  with pytest.raises(ValueError, match="MSE a scalar one"):
    trainer.build_learner(["Pong"], SMALL, losses.LossConfig(td="mse"))
  with pytest.raises(ValueError, match="same \\(num_atoms, v_min, v_max\\)"):
    trainer.build_learner(["Pong"], SMALL, losses.LossConfig(v_max=20.0))
  # Matching configurations build; the heads cover Pong's 6 and Breakout's 4 actions.
  learner = trainer.build_learner(["Pong", "Breakout"], SMALL, losses.LossConfig())
  obs = jax.ShapeDtypeStruct((1, 84, 84, 4), jnp.uint8)
  game_id = jax.ShapeDtypeStruct((1,), jnp.int32)
  params = jax.eval_shape(learner.network.init, jax.random.PRNGKey(0), obs, game_id)
  out = jax.eval_shape(learner.network.apply, params, obs, game_id)
  assert out.q_values.shape == (1, 6)


def test_workdir_uri_is_refused_before_any_work(tmp_path):
  with pytest.raises(ValueError, match="URIs are not supported"):
    trainer.train("gs://bucket/run", game_names=["Pong"], dataset_fn=None, network_config=SMALL,
                  loss_config=losses.LossConfig(), optimizer_fn=None)  # fmt: skip


def test_an_unwritable_workdir_is_refused_before_any_work(tmp_path):
  not_a_directory = tmp_path / "file"
  not_a_directory.write_text("")
  with pytest.raises(PermissionError, match="file/run is not writable"):
    trainer.train(str(not_a_directory / "run"), game_names=["Pong"], dataset_fn=None,
                  network_config=SMALL, loss_config=losses.LossConfig(), optimizer_fn=None)  # fmt: skip


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


def test_unknown_game_is_named():
  with pytest.raises(ValueError, match="Pongg"):
    trainer.build_learner(["Pongg"], SMALL, losses.LossConfig())


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
