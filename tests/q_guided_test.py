"""Q-guided selection: the best of k proposals under the critic, its runs and its bad input."""

import os

import jax
import numpy as np
import pytest

from scaled_ql import atari, checkpointing, evaluate, networks, runs, trainer, transformer, types
from scaled_ql.data import source
from scaled_ql.methods import loading
from scaled_ql.methods.bc import BC
from scaled_ql.methods.decision_transformer import DecisionTransformer
from scaled_ql.methods.q_guided import QGuided, QGuidedPolicy
from scaled_ql.methods.scaled_ql import ScaledQL

SMALL = networks.NetworkConfig(torso="small", widths=(8, 8, 8, 8), projection_dim=16)
TINY_DT = transformer.TransformerConfig(num_layers=1, width=32, num_heads=2, dropout_rate=0.0)
GAMES = ["Breakout", "Pong"]


class _Proposal(types.Policy):
  def __init__(self, candidates):
    self.candidates, self.observed = candidates, []

  def sample_actions(self, obs, game_id, num_samples):
    assert num_samples == self.candidates.shape[1]
    return self.candidates

  def observe(self, action, reward, ended):
    self.observed.append(action)


def test_the_best_of_the_sampled_actions_under_q_is_played():
  candidates = np.array([[0, 2, 1], [3, 3, 0]], np.int32)  # k = 3 per environment
  q = np.array([[5.0, 1.0, 9.0, 0.0], [0.0, 1.0, 2.0, 7.0]], np.float32)
  proposal = _Proposal(candidates)
  seen_games = []

  def q_values(obs, game_id):
    seen_games.append(game_id)
    return q

  policy = QGuidedPolicy(proposal, q_values, np.array([1, 0], np.int32), 3)
  actions = policy(np.zeros((2, 84, 84, 4), np.uint8), np.array([0, 1], np.int32))
  # Env 0: candidates 0, 2, 1 have Q 5, 9, 1 -> 2 (the global argmax, 2, happens to be one);
  # env 1: 3, 3, 0 have Q 7, 7, 0 -> 3, although action 2 (Q 2) was not proposed.
  np.testing.assert_array_equal(actions, [2, 3])
  np.testing.assert_array_equal(seen_games[0], [1, 0])  # the critic's own game ids
  policy.observe(actions, np.zeros(2), np.zeros(2, bool))
  np.testing.assert_array_equal(proposal.observed[0], [2, 3])  # a stateful proposal is told


class _NoData(source.DataSource):
  """A 0-step run draws no batch."""

  def __init__(self, **kwargs):
    del kwargs

  def iterate(self, start_step, current_policy=None):
    raise AssertionError("a 0-step run must not draw batches")
    yield


def _zero_step_run(workdir, method, init_from=None):
  trainer.train(
    workdir, game_names=GAMES, dataset_fn=_NoData, method=method, num_grad_steps=0,
    global_batch_size=4, init_from=init_from,
  )  # fmt: skip
  return workdir


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("runs")
  _zero_step_run(str(root / "critic"), ScaledQL(network=SMALL, target_update_period=2))
  _zero_step_run(str(root / "bc"), BC(network=SMALL))
  _zero_step_run(str(root / "dt"), DecisionTransformer(transformer=TINY_DT))
  return root


def test_a_zero_step_run_checkpoints_its_initial_parameters(runs_dir):
  critic = str(runs_dir / "critic")
  assert checkpointing.Checkpointer(critic).latest_step() == 0
  info = runs.read_run_info(critic)
  assert info["num_grad_steps"] == 0 and info["method"] == "scaled_ql"


@pytest.mark.parametrize("proposal", ["bc", "dt"])
def test_q_guided_runs_start_from_the_proposal_and_play_real_ale(runs_dir, tmp_path, proposal):
  from scaled_ql.initialization import InitFrom

  method = QGuided(
    BC(network=SMALL) if proposal == "bc" else DecisionTransformer(transformer=TINY_DT),
    critic_from=str(runs_dir / "critic"), num_samples=4, name=f"q_guided_{proposal}",
  )  # fmt: skip
  workdir = _zero_step_run(str(tmp_path / "q"), method, InitFrom(str(runs_dir / proposal)))
  policy, game_names, step = loading.load_policy(workdir)
  assert step == 0 and isinstance(policy, QGuidedPolicy)
  proposal_params, *_ = loading.restore_params(str(runs_dir / proposal))
  own_params, *_ = loading.restore_params(workdir)
  for a, b in zip(jax.tree.leaves(proposal_params), jax.tree.leaves(own_params), strict=True):
    np.testing.assert_array_equal(a, b)  # the proposal's parameters, carried over
  results = evaluate.evaluate(
    policy, game_names, 1, protocol=atari.Protocol(max_episode_steps=30), num_envs_per_game=1
  )
  assert all(results.games[g].lengths == [30] for g in GAMES)
  # The critic is pinned to the checkpoint it had when the run started.
  recorded = runs.read_run_info(workdir)["method_config"]["critic_from"]
  assert recorded == os.path.join(str(runs_dir / "critic"), "checkpoints", "0")


def test_sampled_bc_plays_what_q_guided_bc_with_k_1_plays(runs_dir):
  # The "sampled BC" column: BC's policy drawing from its softmax, as a Q-guided policy with
  # one candidate does; the greedy BC policy plays the argmax.
  params, *_ = loading.restore_params(str(runs_dir / "bc"))
  sampled = BC(network=SMALL, act_by_sampling=True).build(GAMES).make_policy(params)
  greedy_learner = BC(network=SMALL).build(GAMES)
  guided = QGuidedPolicy(greedy_learner.make_policy(params),
                         lambda obs, game_id: np.zeros((len(obs), 6)), np.arange(2), 1)  # fmt: skip
  obs = np.random.default_rng(0).integers(0, 256, (64, 84, 84, 4), dtype=np.uint8)
  game_id = np.arange(64, dtype=np.int32) % 2
  draws = [sampled(obs, game_id) for _ in range(3)]
  for drawn in draws:
    np.testing.assert_array_equal(drawn, guided(obs, game_id))
  assert len({tuple(d) for d in draws}) > 1  # draws, not one fixed action
  greedy = greedy_learner.make_policy(params)(obs, game_id)
  assert not all((d == greedy).all() for d in draws)


def test_bad_q_guided_configurations_are_named(runs_dir):
  with pytest.raises(ValueError, match=r"num_samples \(k\) must be >= 1, got 0"):
    QGuided(BC(network=SMALL), str(runs_dir / "critic"), num_samples=0)
  with pytest.raises(ValueError, match="is a dt run, not a critic: give a Scaled QL run"):
    QGuided(BC(network=SMALL), str(runs_dir / "dt")).build(GAMES)
  with pytest.raises(ValueError, match="is a bc run, not a critic"):
    QGuided(BC(network=SMALL), str(runs_dir / "bc")).build(GAMES)
  with pytest.raises(ValueError, match="scaled_ql does not sample actions"):
    QGuided(ScaledQL(network=SMALL), str(runs_dir / "critic")).build(GAMES)
  with pytest.raises(ValueError, match=r"has no head for \['Asterix'\]"):
    QGuided(BC(network=SMALL), str(runs_dir / "critic")).build(["Breakout", "Asterix"])
  with pytest.raises(ValueError, match="cannot load a run there"):
    QGuided(BC(network=SMALL), str(runs_dir / "nothing")).build(GAMES)
  assert os.path.isdir(runs_dir / "critic")
