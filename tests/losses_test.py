"""Losses against hand-computed numbers and an independent C51 projection reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaled_ql import losses, types
from scaled_ql.networks import ILLEGAL_ACTION_VALUE


def _reference_projection(z, p, v_min, v_max, num_atoms):
  """C51 projection as in Bellemare et al. (2017), Algorithm 1, written with explicit loops.

  The same semantics as dopamine's `project_distribution` (supports clipped to
  [v_min, v_max], mass split linearly between the two neighbouring atoms), but computed
  the other way round: scatter each source atom into floor/ceil bins.
  """
  delta = (v_max - v_min) / (num_atoms - 1)
  m = np.zeros(num_atoms, np.float64)
  for z_j, p_j in zip(z, p, strict=True):
    b = min(max((z_j - v_min) / delta, 0.0), num_atoms - 1.0)  # Clipped to the support.
    lower, upper = int(np.floor(b)), int(np.ceil(b))
    if lower == upper:
      m[lower] += p_j
    else:
      m[lower] += p_j * (upper - b)
      m[upper] += p_j * (b - lower)
  return m


@pytest.mark.parametrize("seed", range(5))
def test_projection_matches_reference_on_random_supports(seed):
  rng = np.random.default_rng(seed)
  num_atoms = int(rng.integers(3, 60))
  v_min = float(rng.uniform(-20, 0))
  v_max = v_min + float(rng.uniform(0.5, 30))
  num_source = int(rng.integers(2, 80))
  # Random source supports reaching beyond both ends, in random order.
  z = rng.uniform(v_min - 5, v_max + 5, num_source)
  p = rng.dirichlet(np.ones(num_source))
  atoms = jnp.linspace(v_min, v_max, num_atoms)
  got = losses.categorical_projection(
    jnp.asarray(z, jnp.float32), jnp.asarray(p, jnp.float32), atoms
  )
  want = _reference_projection(z, p, v_min, v_max, num_atoms)
  np.testing.assert_allclose(got, want, atol=2e-5)
  np.testing.assert_allclose(np.sum(got), 1.0, atol=1e-5)


def test_projection_of_shifted_support_by_hand():
  atoms = jnp.array([-1.0, 0.0, 1.0])
  # r=0.5, discount=1: masses at -0.5, 0.5, 1.5 -> halves split, the last clipped to 1.
  got = losses.categorical_projection(atoms + 0.5, jnp.array([0.2, 0.3, 0.5]), atoms)
  np.testing.assert_allclose(got, [0.1, 0.25, 0.65], atol=1e-6)


def test_cql_value_and_gradient_by_hand():
  # Slot 3 is illegal and huge: it must not enter the logsumexp nor get gradient.
  q = jnp.array([1.0, 2.0, 0.0, 100.0])
  legal = jnp.array([True, True, True, False])
  value, grad = jax.value_and_grad(losses.cql_penalty)(q, jnp.array(0), legal)
  # log(e^1 + e^2 + e^0) - 1
  np.testing.assert_allclose(value, 1.4076059644443801, rtol=1e-6)
  # softmax over legal actions minus one-hot(data action)
  want = [0.24472847105479764 - 1.0, 0.6652409557748219, 0.09003057317038046, 0.0]
  np.testing.assert_allclose(grad, want, atol=1e-6)


def test_bc_loss_by_hand():
  q = jnp.array([1.0, 2.0, 0.0, 100.0])
  legal = jnp.array([True, True, True, False])
  np.testing.assert_allclose(losses.bc_loss(q, jnp.array(1), legal), 0.4076059644443803, rtol=1e-6)


def test_categorical_td_loss_by_hand():
  atoms = jnp.array([-1.0, 0.0, 1.0])
  logits_tm1 = jnp.zeros((2, 3))
  # Terminal: the target is r_t alone (0.5 -> half on 0, half on 1), whatever logits_t say.
  logits_t = jnp.array([[9.0, 0.0, 0.0], [0.0, 0.0, 9.0]])
  selector = jnp.array([0.0, 1.0])
  loss = losses.categorical_td_loss(
    logits_tm1, jnp.array(1), jnp.array(0.5), jnp.array(0.0), logits_t, selector, atoms
  )
  np.testing.assert_allclose(loss, np.log(3.0), rtol=1e-6)
  # Bootstrap from the selected action only: slot 1 has a larger selector value but is
  # masked; slot 0's distribution (almost all mass on -1) is used, shifted by r=1 -> 0.
  masked = jnp.array([0.0, ILLEGAL_ACTION_VALUE])
  logits_t = jnp.array([[50.0, 0.0, 0.0], [0.0, 0.0, 50.0]])
  logits_tm1 = jnp.log(jnp.array([[0.25, 0.5, 0.25], [1 / 3, 1 / 3, 1 / 3]]))
  loss = losses.categorical_td_loss(
    logits_tm1, jnp.array(0), jnp.array(1.0), jnp.array(1.0), logits_t, masked, atoms
  )
  np.testing.assert_allclose(loss, -np.log(0.5), rtol=1e-5)


def test_mse_td_loss_by_hand():
  q_tm1 = jnp.array([1.0, 3.0])
  q_t = jnp.array([2.0, 10.0])
  selector = jnp.array([5.0, 1.0])  # double-DQN style: selects action 0, valued by q_t.
  loss = losses.mse_td_loss(q_tm1, jnp.array(1), jnp.array(1.0), jnp.array(0.5), q_t, selector)
  np.testing.assert_allclose(loss, 0.5 * (1.0 + 0.5 * 2.0 - 3.0) ** 2)


def _fake_apply(params, obs, game_id):
  """A linear 'network' on the mean pixel, with 3 action slots; game 1 has 2 actions."""
  from scaled_ql.networks import NetworkOutput

  x = jnp.mean(obs.astype(jnp.float32), axis=(1, 2, 3)) / 255.0
  logits = x[:, None, None] * params["w"][None] + params["b"][None]  # [B, 3, 5]
  legal = jnp.array([[True, True, True], [True, True, False]])[game_id]
  q = jnp.sum(jax.nn.softmax(logits, -1) * jnp.linspace(-2.0, 2.0, 5), -1)
  q = jnp.where(legal, q, ILLEGAL_ACTION_VALUE)
  return NetworkOutput(q, logits, x[:, None], legal)


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


def test_make_loss_combines_terms_and_reports_per_game_metrics():
  params = {
    "w": jnp.asarray(np.random.default_rng(1).normal(size=(3, 5)), jnp.float32),
    "b": jnp.zeros((3, 5)),
  }
  batch = _batch()
  config = losses.LossConfig(
    td="c51", cql_alpha=0.5, bc_weight=0.25, num_atoms=5, v_min=-2.0, v_max=2.0
  )
  loss, metrics = losses.make_loss(config, _fake_apply, num_games=2)(params, params, batch, None)
  np.testing.assert_allclose(
    loss, metrics["td_loss"] + 0.5 * metrics["cql_loss"] + 0.25 * metrics["bc_loss"], rtol=1e-6
  )
  for name in ("td_loss", "cql_loss", "q_mean", "batch_fraction"):
    assert metrics[f"per_game/{name}"].shape == (2,)
  np.testing.assert_allclose(metrics["per_game/batch_fraction"], [0.5, 0.5])
  # The per-game means average back to the batch mean when games are balanced.
  np.testing.assert_allclose(jnp.mean(metrics["per_game/td_loss"]), metrics["td_loss"], rtol=1e-6)


def test_bc_only_is_plain_behaviour_cloning():
  params = {"w": jnp.ones((3, 5)), "b": jnp.zeros((3, 5))}
  batch = _batch()
  config = losses.LossConfig(
    td_weight=0.0, cql_alpha=0.0, bc_weight=1.0, num_atoms=5, v_min=-2.0, v_max=2.0
  )
  loss, metrics = losses.make_loss(config, _fake_apply, num_games=2)(params, params, batch, None)
  out = _fake_apply(params, batch.obs, batch.game_id)
  want = np.mean(jax.vmap(losses.bc_loss)(out.q_values, batch.action, out.legal_actions))
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  assert metrics["td_loss"] == 0.0


def test_mse_loss_runs_and_double_dqn_changes_selection_only():
  params = {
    "w": jnp.asarray(np.random.default_rng(2).normal(size=(3, 5)), jnp.float32),
    "b": jnp.zeros((3, 5)),
  }
  target = jax.tree.map(lambda x: -x, params)
  batch = _batch()
  for td in ("mse", "c51"):
    base = losses.LossConfig(td=td, cql_alpha=0.0, num_atoms=5, v_min=-2.0, v_max=2.0)
    double = losses.LossConfig(
      td=td, cql_alpha=0.0, double_dqn=True, num_atoms=5, v_min=-2.0, v_max=2.0
    )
    a = losses.make_loss(base, _fake_apply, 2)(params, target, batch, None)[0]
    b = losses.make_loss(double, _fake_apply, 2)(params, target, batch, None)[0]
    assert np.isfinite(a) and np.isfinite(b)
    assert not np.isclose(a, b)  # Online and target networks pick different actions here.
