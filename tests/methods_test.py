"""The methods: Scaled QL and BC losses, rebuilding a method from run_info, parameter transfer."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaled_ql import games, losses, networks, types
from scaled_ql.methods import bc, loading, q_network
from scaled_ql.methods.scaled_ql import ScaledQL
from scaled_ql.networks import ILLEGAL_ACTION_VALUE

FIVE_ATOMS = networks.NetworkConfig(num_atoms=5, v_min=-2.0, v_max=2.0)
SMALL = networks.NetworkConfig(torso="small", widths=(8, 8, 8, 8), projection_dim=16)


def _fake_apply(params, obs, game_id):
  """A linear 'network' on the mean pixel, with 3 action slots; game 1 has 2 actions."""
  x = jnp.mean(obs.astype(jnp.float32), axis=(1, 2, 3)) / 255.0
  logits = x[:, None, None] * params["w"][None] + params["b"][None]  # [B, 3, 5]
  legal = jnp.array([[True, True, True], [True, True, False]])[game_id]
  q = jnp.sum(jax.nn.softmax(logits, -1) * jnp.linspace(-2.0, 2.0, 5), -1)
  q = jnp.where(legal, q, ILLEGAL_ACTION_VALUE)
  return networks.NetworkOutput(q, logits, x[:, None], legal)


def _batch(batch_size=6):
  rng = np.random.default_rng(0)
  obs = rng.integers(0, 256, (batch_size, 84, 84, 4), dtype=np.uint8)
  game_id = np.array([0, 1] * (batch_size // 2), np.int32)
  return types.Batch(
    obs=obs,
    action=np.array([0, 1, 2, 0, 1, 2][:batch_size], np.int32) % np.where(game_id == 1, 2, 3),
    reward=rng.uniform(-1, 1, batch_size).astype(np.float32),
    discount=np.array([0.99, 0.0] * (batch_size // 2), np.float32),
    next_obs=obs[::-1].copy(),
    game_id=game_id,
  )


def _params(seed):
  w = np.random.default_rng(seed).normal(size=(3, 5))
  return {"w": jnp.asarray(w, jnp.float32), "b": jnp.zeros((3, 5))}


def test_scaled_ql_combines_terms_and_reports_per_game_metrics():
  params, batch = _params(1), _batch()
  method = ScaledQL(network=FIVE_ATOMS, cql_alpha=0.5, bc_weight=0.25)
  loss, metrics = method.make_loss(_fake_apply, num_games=2)(params, params, batch, None)
  np.testing.assert_allclose(
    loss, metrics["td_loss"] + 0.5 * metrics["cql_loss"] + 0.25 * metrics["bc_loss"], rtol=1e-6
  )
  for name in ("td_loss", "cql_loss", "q_mean", "batch_fraction"):
    assert metrics[f"per_game/{name}"].shape == (2,)
  np.testing.assert_allclose(metrics["per_game/batch_fraction"], [0.5, 0.5])
  # The per-game means average back to the batch mean when games are balanced.
  np.testing.assert_allclose(jnp.mean(metrics["per_game/td_loss"]), metrics["td_loss"], rtol=1e-6)


def test_bc_is_plain_behaviour_cloning_without_q_terms():
  params, batch = {"w": jnp.ones((3, 5)), "b": jnp.zeros((3, 5))}, _batch()
  loss, metrics = bc.make_loss(_fake_apply, num_games=2)(params, None, batch, None)
  out = _fake_apply(params, batch.obs, batch.game_id)
  want = np.mean(jax.vmap(losses.bc_loss)(out.q_values, batch.action, out.legal_actions))
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  assert not any(name.startswith(("td", "cql", "q_")) for name in metrics), sorted(metrics)
  assert bc.BC(network=SMALL).build(["Pong"]).target_update_period is None


def test_mse_and_double_dqn_change_the_loss():
  params = _params(2)
  target = jax.tree.map(lambda x: -x, params)
  batch = _batch()
  scalar = networks.NetworkConfig(num_atoms=5, v_min=-2.0, v_max=2.0, distributional=False)
  for network, td_loss in ((scalar, losses.MSE()), (FIVE_ATOMS, losses.C51())):
    single = ScaledQL(network=network, td_loss=td_loss, cql_alpha=0.0)
    double = ScaledQL(network=network, td_loss=td_loss, cql_alpha=0.0, double_dqn=True)
    a = single.make_loss(_fake_apply, 2)(params, target, batch, None)[0]
    b = double.make_loss(_fake_apply, 2)(params, target, batch, None)[0]
    assert np.isfinite(a) and np.isfinite(b)
    assert not np.isclose(a, b)  # Online and target networks pick different actions here.


def test_td_loss_and_network_must_agree():
  with pytest.raises(ValueError, match="needs a scalar network"):
    ScaledQL(network=SMALL, td_loss=losses.MSE())
  with pytest.raises(ValueError, match="needs a distributional network"):
    ScaledQL(network=networks.NetworkConfig(distributional=False))


@pytest.mark.parametrize("method", [ScaledQL(network=SMALL, cql_alpha=0.3), bc.BC(network=SMALL)])
def test_a_method_is_rebuilt_from_its_run_info(method):
  record = json.loads(json.dumps(loading.method_record(method)))  # As stored in run_info.json.
  rebuilt = loading.load_method(record)
  assert rebuilt == method
  with pytest.raises(ValueError, match="records no method_class"):
    loading.load_method({"method": "scaled_ql"})


def test_greedy_policy_plays_only_the_games_own_actions():
  learner = ScaledQL(network=SMALL).build(["Breakout", "Asterix"])  # 4 and 9 actions.
  params = learner.init(jax.random.PRNGKey(0))
  # Push Breakout's illegal slot 8 (Asterix's legal one) far above every other output.
  params["scaled_ql/heads"]["b"] = params["scaled_ql/heads"]["b"].at[:, 8 * 51 + 50].set(1e3)
  policy = learner.make_policy(params)
  obs = np.zeros((2, 84, 84, 4), np.uint8)
  actions = policy(obs, np.array([0, 1], np.int32))
  assert actions[0] < games.num_actions("Breakout") and actions[1] == 8


def _run_info(method, game_names):
  """What a run's run_info.json says of its games and method (as stored: JSON)."""
  return json.loads(json.dumps({"game_names": game_names, **loading.method_record(method)}))


def test_transfer_copies_shared_layers_and_maps_heads_by_game():
  source_games, target_games = ["Breakout", "Pong"], ["Asterix", "Breakout"]
  source = ScaledQL(network=SMALL).build(source_games).init(jax.random.PRNGKey(1))
  info = _run_info(ScaledQL(network=SMALL), source_games)
  learner = ScaledQL(network=SMALL).build(target_games)
  fresh = learner.init(jax.random.PRNGKey(2))
  params = learner.transfer(source, info, fresh)
  for module in params:
    for name in params[module]:
      if not q_network.is_head(module):
        np.testing.assert_array_equal(params[module][name], source[module][name])
  w, w_src, w_fresh = (p["scaled_ql/heads"]["w"] for p in (params, source, fresh))
  breakout = games.num_actions("Breakout") * 51
  np.testing.assert_array_equal(w[1, :, :breakout], w_src[0, :, :breakout])  # Breakout's head.
  np.testing.assert_array_equal(w[0], w_fresh[0])  # Asterix is new: its fresh head.
  assert w.shape[-1] == games.num_actions("Asterix") * 51
  # The same shapes, other meaning (GroupNorm's groups): refused, naming the field.
  regrouped = ScaledQL(network=dataclasses.replace(SMALL, num_groups=4)).build(target_games)
  with pytest.raises(ValueError, match="num_groups: source 32 vs configured 4"):
    regrouped.transfer(source, info, fresh)
  # A layer of another shape in a source whose record was edited: named, not copied.
  edited = _run_info(ScaledQL(network=dataclasses.replace(SMALL, projection_dim=32)), source_games)
  wider = ScaledQL(network=dataclasses.replace(SMALL, projection_dim=32)).build(target_games)
  with pytest.raises(ValueError, match="projection/w: source"):
    wider.transfer(source, edited, wider.init(jax.random.PRNGKey(2)))
