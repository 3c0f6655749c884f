"""The trainer's configuration checks (the loop itself runs in end_to_end_test.py)."""

import jax
import jax.numpy as jnp
import pytest

from scaled_ql import losses, networks, trainer

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


def test_unknown_game_is_named():
  with pytest.raises(ValueError, match="Pongg"):
    trainer.build_learner(["Pongg"], SMALL, losses.LossConfig())
