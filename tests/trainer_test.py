"""The trainer's configuration checks (the loop itself runs in end_to_end_test.py)."""

import pytest

from scaled_ql import losses, networks, trainer

SMALL = networks.NetworkConfig(torso="small", widths=(8, 8, 8, 8), projection_dim=16)


def test_loss_and_network_must_agree():
  with pytest.raises(ValueError, match="MSE a scalar one"):
    trainer.build_learner(["Pong"], SMALL, losses.LossConfig(td="mse"))
  with pytest.raises(ValueError, match="same \\(num_atoms, v_min, v_max\\)"):
    trainer.build_learner(["Pong"], SMALL, losses.LossConfig(v_max=20.0))
  learner = trainer.build_learner(["Pong", "Breakout"], SMALL, losses.LossConfig())
  assert learner.mesh.devices.size >= 1


def test_unknown_game_is_named():
  with pytest.raises(ValueError, match="Pongg"):
    trainer.build_learner(["Pongg"], SMALL, losses.LossConfig())
