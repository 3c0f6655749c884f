"""Every gin file parses with unknown bindings as errors and builds its network and loss."""

import pathlib

import gin
import pytest

from scaled_ql import config, games, losses, networks, trainer

GIN_FILES = sorted(
  str(p.relative_to(config.GIN_DIR)) for p in pathlib.Path(config.GIN_DIR).rglob("*.gin")
)
SHARD_DIR_BINDING = "data.ReplayDataset.shard_dir = '/nonexistent/shards'"


def test_gin_files_are_found():
  assert {"base.gin", "local.gin", "debug.gin", "pretrain_near_optimal.gin"} <= set(GIN_FILES)


@pytest.mark.parametrize("gin_file", GIN_FILES)
def test_gin_file_builds(gin_file):
  fragment = gin_file == "base.gin" or gin_file.startswith("models/")
  # Fragments are included by the runnable files, which set the games: give them some.
  files = ["base.gin", gin_file] if fragment else [gin_file]
  games_binding = "train.game_names = ['Breakout', 'Pong']"
  config.parse_gin(files, [SHARD_DIR_BINDING] + ([games_binding] if fragment else []))
  bindings = gin.get_bindings("train")  # Resolves references: builds the configs.
  game_names = bindings["game_names"]
  games.validate_games(game_names)
  network_config, loss_config = bindings["network_config"], bindings["loss_config"]
  assert isinstance(network_config, networks.NetworkConfig)
  assert isinstance(loss_config, losses.LossConfig)
  trainer.build_learner(game_names, network_config, loss_config, bindings["optimizer_fn"])
  if not fragment:  # Runnable files set the run's length and batch.
    assert bindings["num_grad_steps"] > 0 and bindings["global_batch_size"] > 0
  counts = networks.count_params(network_config, [games.num_actions(g) for g in game_names])
  assert counts["total"] > 0


@pytest.mark.parametrize(
  "model, paper_size", [("resnet34", 31e6), ("resnet50", 60e6), ("resnet101", 79e6)]
)
def test_paper_model_sizes(model, paper_size):
  # The paper's sizes are those of the 40-game networks of pretrain_near_optimal.gin.
  config.parse_gin(["pretrain_near_optimal.gin", f"models/{model}.gin"], [SHARD_DIR_BINDING])
  bindings = gin.get_bindings("train")
  counts = networks.count_params(
    bindings["network_config"], [games.num_actions(g) for g in bindings["game_names"]]
  )
  assert len(bindings["game_names"]) == 40
  assert abs(counts["total"] - paper_size) / paper_size < 0.1, counts


def test_typo_is_a_clear_error():
  with pytest.raises(config.UserError, match="cql_alfa"):
    config.parse_gin(["debug.gin"], ["LossConfig.cql_alfa = 1.0"])
  with pytest.raises(config.UserError, match="not found. Available in gin/: .*debug.gin"):
    config.parse_gin(["no_such_file.gin"], [])
