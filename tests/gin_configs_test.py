"""Every gin file parses with unknown bindings as errors and builds its network and loss."""

import pathlib
import re

import gin
import jax
import numpy as np
import pytest

from scaled_ql import cli, configurables, games, networks, trainer
from scaled_ql.data import source
from scaled_ql.methods import loading
from scaled_ql.methods.scaled_ql import ScaledQL
from scaled_ql.report import tables

GIN_FILES = sorted(
  str(p.relative_to(configurables.GIN_DIR))
  for p in pathlib.Path(configurables.GIN_DIR).rglob("*.gin")
)
SHARD_DIR_BINDING = "data.ReplayDataset.shard_dir = '/nonexistent/shards'"
# launch/ablations.sh's arms: gin/local_ablations/ARM.gin.
LOCAL_ARMS = sorted(
  p.stem for p in (pathlib.Path(configurables.GIN_DIR) / "local_ablations").glob("*.gin")
)


def test_gin_files_are_found():
  assert {"base.gin", "local.gin", "debug.gin", "pretrain_near_optimal.gin"} <= set(GIN_FILES)


@pytest.fixture(scope="module")
def critic(tmp_path_factory):
  """A Scaled QL run of every game (0 steps: its initial parameters), the critic of
  the Q-guided files."""
  workdir = str(tmp_path_factory.mktemp("critic"))
  network = networks.NetworkConfig(torso="small", widths=(8, 8, 8, 8), projection_dim=16)
  trainer.train(workdir, game_names=games.ALL_GAMES, dataset_fn=lambda **_: source.DataSource(),
                method=ScaledQL(network=network), num_grad_steps=0, global_batch_size=4)  # fmt: skip
  return workdir


def _files_for(gin_file: str) -> list[str]:
  """Fragments are included by the runnable files: build them inside one."""
  if gin_file.startswith("models/dt_"):
    return ["baselines/dt.gin", gin_file]
  if gin_file.startswith(("methods/", "ablations/fragments/")):
    return ["debug.gin", gin_file]
  if gin_file == "base.gin" or gin_file.startswith("models/"):
    return ["base.gin", gin_file]
  return [gin_file]


@pytest.mark.parametrize("gin_file", GIN_FILES)
def test_gin_file_builds(gin_file, critic):
  files = _files_for(gin_file)
  fragment = files != [gin_file]
  games_binding = "train.game_names = ['Breakout', 'Pong']"
  # Fine-tuning files get the game from `python -m scaled_ql.finetune --game=...`.
  needs_games = fragment and "debug.gin" not in files or "finetune_" in gin_file
  # The 0-step files get their runs as macros (launch/baselines.sh binds them).
  runs = [f"CRITIC = '{critic}'"] if "q_guided" in gin_file else []
  if any(name in gin_file for name in ("q_guided", "sampled_bc", "dt_argmax")):
    runs.append("PROPOSAL = 'the proposal run'")
  configurables.parse_gin(
    files, [SHARD_DIR_BINDING, *runs] + ([games_binding] if needs_games else [])
  )
  bindings = gin.get_bindings("train")  # Resolves references: builds the method.
  game_names = bindings["game_names"]
  games.validate_games(game_names)
  method = bindings["method"]
  learner = method.build(game_names)
  assert loading.load_method(loading.method_record(method)).config() == method.config()
  if not fragment:  # Runnable files set the run's length and batch.
    assert bindings["num_grad_steps"] >= 0 and bindings["global_batch_size"] > 0
  shapes = jax.eval_shape(learner.init, jax.random.PRNGKey(0))
  assert sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(shapes)) > 0


@pytest.mark.parametrize(
  "model, paper_size", [("resnet34", 31e6), ("resnet50", 60e6), ("resnet101", 79e6)]
)
def test_paper_model_sizes(model, paper_size):
  # The paper's sizes are those of the 40-game networks of pretrain_near_optimal.gin.
  configurables.parse_gin(["pretrain_near_optimal.gin", f"models/{model}.gin"],
                          [SHARD_DIR_BINDING])  # fmt: skip
  bindings = gin.get_bindings("train")
  counts = networks.count_params(
    bindings["method"].network, [games.num_actions(g) for g in bindings["game_names"]]
  )
  assert len(bindings["game_names"]) == 40
  assert abs(counts["total"] - paper_size) / paper_size < 0.1, counts


def test_typo_is_a_clear_error():
  with pytest.raises(cli.UserError, match="cql_alfa"):
    configurables.parse_gin(["debug.gin"], ["ScaledQL.cql_alfa = 1.0"])
  with pytest.raises(cli.UserError, match="not found. Available in gin/: .*debug.gin"):
    configurables.parse_gin(["no_such_file.gin"], [])


@pytest.mark.parametrize("model", ["small_narrow", "small", "small_wide"])
def test_scaling_sizes_state_their_parameter_counts(model):
  """Each size of launch/scaling.sh states its count with the embedded default's games."""
  text = (pathlib.Path(configurables.GIN_DIR) / "models" / f"{model}.gin").read_text()
  stated = int(re.search(r"([\d,]+) parameters with the embedded default's 4 games",
                         text).group(1).replace(",", ""))  # fmt: skip
  configurables.parse_gin(["local.gin", f"models/{model}.gin"], [SHARD_DIR_BINDING])
  bindings = gin.get_bindings("train")
  num_actions = [games.num_actions(g) for g in bindings["game_names"]]
  assert networks.count_params(bindings["method"].network, num_actions)["total"] == stated


@pytest.mark.parametrize("arm", LOCAL_ARMS)
def test_ablation_arms_are_local_gin_with_one_change_and_their_own_name(arm):
  """launch/ablations.sh's arm ARM is local.gin plus the paper-scale file's fragment, and its
  runs are named (and reported as) scaled_ql_ARM."""
  configurables.parse_gin([f"local_ablations/{arm}.gin"], [SHARD_DIR_BINDING])
  method = gin.get_bindings("train")["method"]
  configurables.parse_gin(["local.gin", f"ablations/fragments/{arm}.gin"], [SHARD_DIR_BINDING])
  assert gin.get_bindings("train")["method"].config() == method.config()
  assert method.name == f"scaled_ql_{arm}"
  configurables.parse_gin(["local.gin"], [SHARD_DIR_BINDING])
  base = gin.get_bindings("train")["method"].config()
  changed = {k for k, v in method.config().items() if base[k] != v}
  assert "name" in changed and len(changed) > 1, changed  # The name and the arm's change.
  configurables.parse_gin([f"ablations/{arm}.gin"], [SHARD_DIR_BINDING])  # Paper scale.
  assert gin.get_bindings("train")["method"].name == method.name


def test_every_method_named_in_a_gin_file_has_a_report_label():
  named = set()
  for gin_file in GIN_FILES:
    text = (pathlib.Path(configurables.GIN_DIR) / gin_file).read_text()
    named |= set(re.findall(r'^methods\.\w+\.name = "(\w+)"', text, re.M))
  assert {"sampled_bc", "scaled_ql_no_cql", "scaled_ql_cql_alpha_0_01"} <= named
  assert named <= set(tables.METHOD_NAMES), named - set(tables.METHOD_NAMES)
