"""Network shapes, action masking, per-game head selection and paper-size parameter counts."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaled_ql import games, networks

# Minimal action-set sizes of the 40 training games (RL Unplugged's 46 minus Alien,
# MsPacman, Pong, SpaceInvaders, StarGunner and RoadRunner), read from ale-py 0.12.1's
# `ALE/{Game}-v5` action spaces: Amidar..Zaxxon in alphabetical order. Sum 501.
NUM_ACTIONS_40_GAMES = [10, 7, 9, 4, 18, 18, 9, 18, 4, 6, 18, 18, 9, 6, 18, 9, 18, 3, 18, 8] + [
  18,
  18,
  18,
  18,
  18,
  18,
  14,
  6,
  8,
  6,
  6,
  18,
  18,
  18,
  10,
  6,
  9,
  10,
  18,
  18,
]
PAPER_SIZES = {"resnet34": 31e6, "resnet50": 60e6, "resnet101": 79e6}

NUM_ACTIONS = (3, 6, 4)


def _inputs(batch_size=6, seed=0):
  rng = np.random.default_rng(seed)
  obs = jnp.asarray(rng.integers(0, 256, (batch_size, 84, 84, 4)), jnp.uint8)
  game_id = jnp.asarray(np.arange(batch_size) % len(NUM_ACTIONS), jnp.int32)
  return obs, game_id


def _jitted(network):
  # One compiled program each instead of op-by-op dispatch: much faster on CPU.
  return network._replace(init=jax.jit(network.init), apply=jax.jit(network.apply))


@pytest.fixture(scope="module")
def small():
  network = _jitted(networks.make_network(networks.NetworkConfig(torso="small"), NUM_ACTIONS))
  obs, game_id = _inputs()
  params = network.init(jax.random.PRNGKey(0), obs, game_id)
  return network, params, obs, game_id


def test_output_shapes_and_unit_norm_representation(small):
  network, params, obs, game_id = small
  out = network.apply(params, obs, game_id)
  assert out.q_values.shape == (6, 6)
  assert out.logits.shape == (6, 6, 51)
  assert out.representation.shape == (6, 128)
  np.testing.assert_allclose(jnp.linalg.norm(out.representation, axis=-1), np.sqrt(128), rtol=1e-5)


def test_illegal_actions_are_masked_and_never_chosen(small):
  network, params, obs, game_id = small
  # Make the illegal slots' logits favour the top atom, so unmasked they would win.
  heads = dict(params["scaled_ql/heads"])
  b = np.zeros(heads["b"].shape, np.float32).reshape(len(NUM_ACTIONS), 6, 51)
  b[:, :, -1] = 100.0 * (np.arange(6)[None, :] >= np.array(NUM_ACTIONS)[:, None])
  params = {**params, "scaled_ql/heads": {**heads, "b": jnp.asarray(b.reshape(heads["b"].shape))}}
  out = network.apply(params, obs, game_id)
  legal = np.arange(6)[None, :] < np.array(NUM_ACTIONS)[np.asarray(game_id)][:, None]
  np.testing.assert_array_equal(out.legal_actions, legal)
  assert np.all(np.asarray(out.q_values)[~legal] == networks.ILLEGAL_ACTION_VALUE)
  assert np.all(np.asarray(out.q_values)[legal] > -10.0)
  assert np.all(legal[np.arange(6), np.argmax(out.q_values, axis=1)])


def test_heads_are_selected_by_game_id(small):
  network, params, obs, game_id = small
  heads = params["scaled_ql/heads"]
  # Perturb game 1's head only: examples of games 0 and 2 must not change.
  w = heads["w"].at[1].add(1.0)
  changed = {**params, "scaled_ql/heads": {**heads, "w": w}}
  before = network.apply(params, obs, game_id).logits
  after = network.apply(changed, obs, game_id).logits
  is_game_1 = np.asarray(game_id) == 1
  np.testing.assert_array_equal(before[~is_game_1], after[~is_game_1])
  assert not np.allclose(before[is_game_1], after[is_game_1])


def test_examples_are_independent_of_the_rest_of_the_batch(small):
  network, params, obs, game_id = small
  full = network.apply(params, obs, game_id).q_values
  alone = network.apply(params, obs[2:3], game_id[2:3]).q_values
  np.testing.assert_allclose(full[2:3], alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
  "changes",
  [
    {"torso": "nature_cnn"},
    {"torso": "nature_cnn", "spatial_embedding": False, "feature_norm": False},
    {"torso": "nature_cnn", "distributional": False},
  ],
)
def test_variants_build(changes):
  config = dataclasses.replace(networks.NetworkConfig(), **changes)
  network = _jitted(networks.make_network(config, NUM_ACTIONS))
  obs, game_id = _inputs(batch_size=3)
  out = network.apply(network.init(jax.random.PRNGKey(1), obs, game_id), obs, game_id)
  assert out.logits.shape == (3, 6, config.atoms_per_action)
  assert np.all(np.isfinite(out.q_values))
  if not config.distributional:
    legal = np.asarray(out.legal_actions)
    np.testing.assert_array_equal(
      np.asarray(out.q_values)[legal], np.asarray(out.logits[..., 0])[legal]
    )


@pytest.mark.parametrize("model", sorted(PAPER_SIZES))
def test_param_counts_match_the_paper_within_10_percent(model):
  # The games module's table and ale-py's action spaces (above) must agree.
  assert [games.num_actions(game) for game in games.TRAIN_GAMES] == NUM_ACTIONS_40_GAMES
  counts = networks.count_params(networks.NetworkConfig(torso=model), NUM_ACTIONS_40_GAMES)
  assert len(NUM_ACTIONS_40_GAMES) == 40 and sum(NUM_ACTIONS_40_GAMES) == 501
  parts = counts["torso"] + counts["spatial_embedding"] + counts["projection"] + counts["heads"]
  assert counts["total"] == parts
  assert abs(counts["total"] / PAPER_SIZES[model] - 1) < 0.10, counts
  # The stacked heads also allocate unused slots (up to 18 actions); still within 10%.
  assert counts["heads_allocated"] == 40 * 18 * 51 * (counts["heads"] // (501 * 51))
  assert abs(counts["total_allocated"] / PAPER_SIZES[model] - 1) < 0.10, counts


# Large offsets next to sd 3 would cancel in an unshifted one-pass variance.
@pytest.mark.parametrize("offset", [1.0, 30.0, 3000.0])
def test_group_norm_matches_haiku(offset):
  import haiku as hk

  x = np.random.default_rng(3).normal(size=(2, 11, 9, 64)) * 3 + offset
  x = jnp.asarray(x, jnp.float32)

  def both(x):
    ours = networks.GroupNorm(64, 32, name="ours")(x)
    reference = hk.GroupNorm(32, name="reference")(x)
    return ours, reference

  ours, reference = _apply_init(both, x)
  # The fused x * a + b loses a few float32 ulps of x * a (|x * a| ~ offset / sd).
  np.testing.assert_allclose(ours, reference, atol=1e-4 * max(1.0, offset / 3 / 100))


@pytest.mark.parametrize("shape", [(2, 11, 9, 8), (2, 42, 42, 4)])
def test_max_pool_matches_haiku_values_and_gradients_without_ties(shape):
  import haiku as hk

  x = jnp.asarray(np.random.default_rng(4).normal(size=shape), jnp.float32)

  def reference(x):
    return hk.max_pool(x, window_shape=(1, 3, 3, 1), strides=(1, 2, 2, 1), padding="SAME")

  pooled, ours_vjp = jax.vjp(networks.max_pool_3x3_stride2, x)
  expected, reference_vjp = jax.vjp(reference, x)
  np.testing.assert_array_equal(pooled, expected)
  cotangent = jnp.asarray(np.random.default_rng(5).normal(size=pooled.shape), jnp.float32)
  np.testing.assert_allclose(ours_vjp(cotangent)[0], reference_vjp(cotangent)[0], atol=1e-6)


def test_max_pool_shares_the_gradient_among_tied_maxima():
  # Flat regions (a constant Atari background after ReLU) tie: the gradient is split among
  # the tied inputs (haiku gives it all to one); either is a valid subgradient, and the
  # total is conserved.
  x = jnp.ones((1, 6, 6, 1), jnp.float32)
  pooled, vjp = jax.vjp(networks.max_pool_3x3_stride2, x)
  np.testing.assert_array_equal(pooled, jnp.ones((1, 3, 3, 1)))
  (grad,) = vjp(jnp.ones_like(pooled))
  assert float(jnp.sum(grad)) == pytest.approx(9.0) and float(jnp.min(grad)) > 0


def _apply_init(fn, x):
  import haiku as hk

  transformed = hk.without_apply_rng(hk.transform(fn))
  return transformed.apply(transformed.init(jax.random.PRNGKey(0), x), x)
