"""Loss terms against hand-computed numbers and an independent C51 projection reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax

from scaled_ql import losses, types
from scaled_ql.networks import ILLEGAL_ACTION_VALUE, NetworkOutput


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
  # The projection the C51 loss uses (rlax's, elementwise: no matmul precision involved).
  got = rlax.categorical_l2_project(jnp.asarray(z, jnp.float32), jnp.asarray(p, jnp.float32), atoms)
  want = _reference_projection(z, p, v_min, v_max, num_atoms)
  np.testing.assert_allclose(got, want, atol=2e-5)
  np.testing.assert_allclose(np.sum(got), 1.0, atol=1e-5)


def test_projection_of_shifted_support_by_hand():
  atoms = jnp.array([-1.0, 0.0, 1.0])
  # r=0.5, discount=1: masses at -0.5, 0.5, 1.5 -> halves split, the last clipped to 1.
  got = rlax.categorical_l2_project(atoms + 0.5, jnp.array([0.2, 0.3, 0.5]), atoms)
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


def _one(logits=None, q=None):
  """A NetworkOutput of one example: logits [A, N] (or q [A]) with a batch axis added."""
  if logits is not None:
    return NetworkOutput(None, jnp.asarray(logits)[None], None, None)
  return NetworkOutput(jnp.asarray(q)[None], None, None, None)


def _transition(action, reward, discount):
  return types.Batch(None, jnp.array([action], jnp.int32), jnp.array([reward], jnp.float32),
                     jnp.array([discount], jnp.float32), None, None)  # fmt: skip


def test_categorical_td_loss_by_hand():
  atoms = jnp.array([-1.0, 0.0, 1.0])
  online = _one(logits=jnp.zeros((2, 3)))
  # Terminal: the target is r_t alone (0.5 -> half on 0, half on 1), whatever logits_t say.
  target = _one(logits=[[9.0, 0.0, 0.0], [0.0, 0.0, 9.0]])
  selector = jnp.array([[0.0, 1.0]])
  loss = losses.C51()(online, target, selector, _transition(1, 0.5, 0.0), atoms)
  np.testing.assert_allclose(loss, [np.log(3.0)], rtol=1e-6)
  # Bootstrap from the selected action only: slot 1 has a larger selector value but is
  # masked; slot 0's distribution (almost all mass on -1) is used, shifted by r=1 -> 0.
  masked = jnp.array([[0.0, ILLEGAL_ACTION_VALUE]])
  target = _one(logits=[[50.0, 0.0, 0.0], [0.0, 0.0, 50.0]])
  online = _one(logits=jnp.log(jnp.array([[0.25, 0.5, 0.25], [1 / 3, 1 / 3, 1 / 3]])))
  loss = losses.C51()(online, target, masked, _transition(0, 1.0, 1.0), atoms)
  np.testing.assert_allclose(loss, [-np.log(0.5)], rtol=1e-5)


def test_mse_td_loss_by_hand():
  online, target = _one(q=[1.0, 3.0]), _one(q=[2.0, 10.0])
  selector = jnp.array([[5.0, 1.0]])  # double-DQN style: selects action 0, valued by q_t.
  loss = losses.MSE()(online, target, selector, _transition(1, 1.0, 0.5), None)
  np.testing.assert_allclose(loss, [0.5 * (1.0 + 0.5 * 2.0 - 3.0) ** 2])
