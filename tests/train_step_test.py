"""The learner: overfitting a fixed batch, target period, determinism, sharded == single device."""

import jax
import numpy as np
import pytest

from scaled_ql import networks, optimizers, sharding, train_step, types
from scaled_ql.methods.bc import BC
from scaled_ql.methods.scaled_ql import ScaledQL

GAMES = ("Pong", "Breakout")  # 6 and 4 actions.
BATCH_SIZE = 8


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  obs = rng.integers(0, 256, (BATCH_SIZE, 84, 84, 4), dtype=np.uint8)
  game_id = (np.arange(BATCH_SIZE) % 2).astype(np.int32)
  return types.Batch(
    obs=obs,
    action=(np.arange(BATCH_SIZE) % 3).astype(np.int32),
    reward=rng.choice([-1.0, 0.0, 1.0], BATCH_SIZE).astype(np.float32),
    discount=np.where(np.arange(BATCH_SIZE) % 4 == 3, 0.0, 0.99**3).astype(np.float32),
    next_obs=np.roll(obs, 1, axis=0),
    game_id=game_id,
  )


class _Learner:
  """Network, loss and optimizer built once; compiled steps cached per (period, mesh, fsdp)."""

  def __init__(self):
    # Nature CNN: the cheapest torso to compile; the structure after it is the paper's.
    method = ScaledQL(
      network=networks.NetworkConfig(torso="nature_cnn"),
      cql_alpha=0.1,
      optimizer_fn=lambda: optimizers.make_optimizer(learning_rate=1e-3, max_grad_norm=10.0),
    )
    learner = method.build(GAMES)
    self.init_fn, self.optimizer, self.loss_fn = learner.init, learner.optimizer, learner.loss_fn
    self._steps = {}

  def init(self, mesh=None, fsdp=False, ema=False):
    return train_step.init_train_state(
      jax.random.PRNGKey(42), self.init_fn, self.optimizer, mesh=mesh, fsdp=fsdp, ema=ema
    )

  def step_fn(self, target_update_period, mesh=None, fsdp=False):
    key = (target_update_period, mesh is not None, fsdp)
    if key not in self._steps:
      state_sharding = None
      if mesh is not None:
        shapes = jax.eval_shape(self.init)  # Shapes only: the shardings depend on them.
        state_sharding = sharding.state_sharding(shapes, mesh, fsdp)
      self._steps[key] = train_step.make_train_step(
        self.loss_fn,
        self.optimizer,
        target_update_period,
        mesh=mesh,
        state_sharding=state_sharding,
      )
    return self._steps[key]


@pytest.fixture(scope="module")
def learner():
  return _Learner()


def _run(state, step_fn, num_steps, batch):
  history = []
  for _ in range(num_steps):
    state, metrics = step_fn(state, batch)
    history.append(jax.device_get(metrics))
  return state, history


def _assert_trees_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_fixed_batch_overfits_and_metrics_are_complete(learner):
  state, history = _run(learner.init(), learner.step_fn(3), 40, _batch())
  losses_ = [m["loss"] for m in history]
  assert np.all(np.isfinite(losses_))
  assert np.mean(losses_[-5:]) < 0.7 * np.mean(losses_[:3]), losses_
  metrics = history[-1]
  for name in (
    "loss",
    "td_loss",
    "cql_loss",
    "q_mean",
    "q_max",
    "grad_norm",
    "update_norm",
  ):
    assert metrics[name].shape == (), name
  assert metrics["per_game/td_loss"].shape == (len(GAMES),)
  assert metrics["grad_norm"] > 0
  assert int(state.step) == 40


def test_target_updates_exactly_at_the_period(learner):
  state, step_fn = learner.init(), learner.step_fn(3)
  batch = _batch()
  previous_target = jax.device_get(state.target_params)
  for step in range(1, 8):
    state, _ = step_fn(state, batch)
    params, target = jax.device_get((state.params, state.target_params))
    assert int(state.step) == step
    if step % 3 == 0:
      _assert_trees_equal(target, params)
    else:
      _assert_trees_equal(target, previous_target)
      assert not np.array_equal(
        params["scaled_ql/projection"]["w"], target["scaled_ql/projection"]["w"]
      )
    previous_target = target


def test_same_seed_gives_bit_identical_params(learner):
  results = []
  for _ in range(2):
    state, _ = _run(learner.init(), learner.step_fn(3), 3, _batch())
    results.append(jax.device_get(state))
  _assert_trees_equal(results[0], results[1])


@pytest.mark.parametrize("fsdp", [False, True])
def test_sharded_step_equals_single_device_step(learner, fsdp):
  assert jax.device_count() >= 4, "tests/conftest.py should give 4 CPU devices"
  batch = _batch(seed=1)
  single, single_history = _run(learner.init(), learner.step_fn(3), 3, batch)

  mesh = sharding.make_mesh(4)
  sharded_fn = learner.step_fn(3, mesh, fsdp)
  sharded = learner.init(mesh, fsdp)
  sharded, sharded_history = _run(sharded, sharded_fn, 3, sharding.put_batch(batch, mesh))

  if fsdp:  # Something large must really be split over the mesh.
    specs = {leaf.sharding.spec for leaf in jax.tree.leaves(sharded.params)}
    assert any(sharding.DATA_AXIS in spec for spec in specs), specs
  np.testing.assert_allclose(sharded_history[-1]["loss"], single_history[-1]["loss"], rtol=1e-5)
  for x, y in zip(jax.tree.leaves(single.params), jax.tree.leaves(sharded.params), strict=True):
    np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-4, atol=1e-6)


def test_put_batch_splits_the_leading_axis():
  mesh = sharding.make_mesh(4)
  batch = sharding.put_batch(_batch(), mesh)
  assert batch.obs.shape == (BATCH_SIZE, 84, 84, 4)
  assert len(batch.obs.addressable_shards) == 4
  assert batch.obs.addressable_shards[0].data.shape == (BATCH_SIZE // 4, 84, 84, 4)


def test_ema_params_follow_the_moving_average(learner):
  decay = 0.9
  state = learner.init(ema=True)
  step_fn = train_step.make_train_step(learner.loss_fn, learner.optimizer, 1000, ema_decay=decay)
  expected = jax.device_get(state.ema_params)
  _assert_trees_equal(expected, jax.device_get(state.params))
  for _ in range(3):
    state, _ = step_fn(state, _batch())
    params = jax.device_get(state.params)
    expected = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, expected, params)
  for x, y in zip(
    jax.tree.leaves(expected), jax.tree.leaves(jax.device_get(state.ema_params)), strict=True
  ):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
  assert not np.allclose(
    state.ema_params["scaled_ql/projection"]["w"], state.params["scaled_ql/projection"]["w"]
  )
  with pytest.raises(ValueError, match="ema_decay"):
    train_step.make_train_step(learner.loss_fn, learner.optimizer, 1, ema_decay=1.0)


def test_a_method_without_target_network_keeps_none():
  learner = BC(network=networks.NetworkConfig(torso="nature_cnn")).build(GAMES)
  state = train_step.init_train_state(jax.random.PRNGKey(0), learner.init, learner.optimizer,
                                      target=False)  # fmt: skip
  step_fn = train_step.make_train_step(learner.loss_fn, learner.optimizer, None)
  state, metrics = _run(state, step_fn, 2, _batch())
  assert state.target_params is None and int(state.step) == 2
  assert np.isfinite(metrics[-1]["loss"])
