"""Precision and rematerialisation: what stays float32 (read from the traced programs), bfloat16
outputs close to float32 ones, the same parameters, remat's equal gradients."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaled_ql import compute, networks, plan, transformer, types
from scaled_ql.methods.decision_transformer import DecisionTransformer
from scaled_ql.methods.scaled_ql import ScaledQL

GAMES = ["Breakout", "Pong"]  # 4 and 6 actions
BF16 = compute.ComputeConfig(np.dtype(jnp.bfloat16))
SMALL = networks.NetworkConfig(torso="small")  # widths 16..64, for the closeness tolerances
TINY = networks.NetworkConfig(torso="small", widths=(8, 8, 8, 8), projection_dim=16)
TINY_DT = transformer.TransformerConfig(num_layers=2, width=32, num_heads=2, dropout_rate=0.1)
# Every reduction (normalization statistics, softmax, logsumexp, cross-entropies, the argmax
# choosing the bootstrap action, the C51 projection's sums) and every exp / log / rsqrt.
_REDUCTIONS = {"reduce_sum", "reduce_max", "reduce_min", "argmax", "argmin", "cumsum"}
_TRANSCENDENTAL = {"exp", "log", "log1p", "rsqrt", "logistic"}


def _batch(batch_size=8, seed=0) -> types.Batch:
  rng = np.random.default_rng(seed)
  obs = rng.integers(0, 256, (batch_size, 84, 84, 4), dtype=np.uint8)
  return types.zeros_batch(batch_size)._replace(
    obs=obs,
    next_obs=np.roll(obs, 1, axis=0),
    action=(np.arange(batch_size) % 4).astype(np.int32),
    reward=rng.choice([-1.0, 0.0, 1.0], batch_size).astype(np.float32),
    discount=np.full(batch_size, 0.97, np.float32),
    game_id=(np.arange(batch_size) % 2).astype(np.int32),
  )


def _windows(batch_size=4, seed=0) -> types.WindowBatch:
  rng = np.random.default_rng(seed)
  return types.zeros_window_batch(batch_size)._replace(
    obs=rng.integers(0, 256, (batch_size, 84, 84, 4), dtype=np.uint8),
    action=rng.integers(0, 4, (batch_size, 4)).astype(np.int32),
    return_to_go=rng.integers(-3, 30, (batch_size, 4)).astype(np.float32),
    game_id=(np.arange(batch_size) % 2).astype(np.int32),
  )


def _in_dtypes(eqn) -> set[str]:
  return {str(v.aval.dtype) for v in eqn.invars if hasattr(v.aval, "dtype")}


def _traced(fn, *args):
  return list(plan.equations(jax.make_jaxpr(fn)(*args).jaxpr))


def _dot_dtypes_by_width(eqns) -> dict[int, set[str]]:
  """{output's last dimension: input dtypes} of the matrix products."""
  by_width = {}
  for e in eqns:
    if e.primitive.name == "dot_general":
      by_width.setdefault(e.outvars[0].aval.shape[-1], set()).update(_in_dtypes(e))
  return by_width


def _with_unit_norm_scales(params):
  """Parameters whose residual branches are active (each block's last norm starts at 0)."""
  return jax.tree_util.tree_map_with_path(
    lambda path, x: jnp.ones_like(x) if path[-1].key == "scale" else x, params
  )


# ----------------------------------------------------------------------------- the knob


def test_auto_is_bfloat16_on_accelerators_only_and_bad_names_are_refused():
  assert compute.resolve("auto", platform="cpu").dtype == np.float32
  assert compute.resolve("auto", platform="gpu").dtype == jnp.bfloat16
  assert compute.resolve("auto", platform="tpu").dtype == jnp.bfloat16
  assert compute.resolve("bfloat16", remat=True) == compute.ComputeConfig(
    np.dtype(jnp.bfloat16), True
  )
  with pytest.raises(ValueError, match="'fp16' is not one of 'float32', 'bfloat16', 'auto'"):
    compute.resolve("fp16")


# ----------------------------------------------------------------------------- float32 islands


def test_scaled_ql_under_bfloat16_keeps_every_loss_quantity_float32():
  learner = ScaledQL(network=TINY).build(GAMES, BF16)
  params = learner.init(jax.random.PRNGKey(0))
  batch, rng = _batch(), jax.random.PRNGKey(1)
  forward = _traced(lambda p: learner.loss_fn(p, p, batch, rng), params)

  convs = [e for e in forward if e.primitive.name == "conv_general_dilated"]
  assert convs and all(_in_dtypes(e) == {"bfloat16"} for e in convs)  # the whole torso
  reductions = [e for e in forward if e.primitive.name in _REDUCTIONS]
  assert {"argmax", "reduce_sum", "reduce_max"} <= {e.primitive.name for e in reductions}
  assert all(_in_dtypes(e) == {"float32"} for e in reductions), [
    (e.primitive.name, _in_dtypes(e)) for e in reductions if _in_dtypes(e) != {"float32"}
  ]
  assert all(_in_dtypes(e) == {"float32"} for e in forward if e.primitive.name in _TRANSCENDENTAL)
  dots = _dot_dtypes_by_width(forward)
  assert dots[6 * 51] == {"float32"}  # the heads: A_max x N logits
  assert dots[TINY.projection_dim] == {"bfloat16"}  # the projection

  (loss, _), grads = jax.jit(jax.value_and_grad(learner.loss_fn, has_aux=True))(
    params, params, batch, rng
  )
  assert loss.dtype == jnp.float32
  assert {x.dtype for x in jax.tree.leaves(grads)} == {np.dtype(jnp.float32)}


def test_the_dt_under_bfloat16_keeps_its_norms_read_outs_and_losses_float32():
  learner = DecisionTransformer(transformer=TINY_DT).build(GAMES, BF16)
  params = learner.init(jax.random.PRNGKey(0))
  batch, rng = _windows(), jax.random.PRNGKey(1)
  forward = _traced(lambda p: learner.loss_fn(p, None, batch, rng), params)

  by_width = _dot_dtypes_by_width(forward)
  assert by_width[3 * TINY_DT.width] == by_width[4 * TINY_DT.width] == {"bfloat16"}  # qkv, MLP
  for classes in (TINY_DT.num_returns, 18, 4):  # the three read-outs
    assert by_width[classes] == {"float32"}
  reductions = [e for e in forward if e.primitive.name in _REDUCTIONS]
  assert all(_in_dtypes(e) == {"float32"} for e in reductions)  # LayerNorms, softmax, losses
  assert all(_in_dtypes(e) == {"float32"} for e in forward if e.primitive.name in _TRANSCENDENTAL)

  (loss, _), grads = jax.jit(jax.value_and_grad(learner.loss_fn, has_aux=True))(
    params, None, batch, rng
  )
  assert loss.dtype == jnp.float32
  assert {x.dtype for x in jax.tree.leaves(grads)} == {np.dtype(jnp.float32)}


def test_group_norm_statistics_are_float32_for_a_bfloat16_input():
  norm = hk.without_apply_rng(hk.transform(lambda x: networks.GroupNorm(8, 4)(x)))
  x = jnp.asarray(np.random.default_rng(0).normal(3.0, 0.1, (2, 5, 5, 8)), jnp.bfloat16)
  params = norm.init(jax.random.PRNGKey(0), x)
  traced = _traced(norm.apply, params, x)
  assert all(_in_dtypes(e) == {"float32"} for e in traced if e.primitive.name in _REDUCTIONS)
  out = norm.apply(params, x)
  assert out.dtype == jnp.bfloat16
  # The float32 computation on the same values, up to the output's own bfloat16 rounding.
  want = norm.apply(params, x.astype(jnp.float32))
  np.testing.assert_allclose(np.asarray(out, np.float32), want, rtol=2**-8, atol=2**-8)


# ----------------------------------------------------------------------------- bfloat16 is close

# bfloat16 keeps 8 significant bits (a relative rounding of at most 2^-9 = 0.2% per value); the
# small torso's ~14 rounded layers compound that to a few percent of each activation's spread
# (measured: the Q-network's logits 1.6% RMS of their RMS, its C51 probabilities within 0.0055,
# the DT's output probabilities within 0.003). The tolerances are about twice those.


def test_bfloat16_q_network_is_close_to_float32_and_has_the_same_parameters():
  batch = _batch(16)
  f32 = networks.make_network(SMALL, [4, 6])
  bf16 = networks.make_network(SMALL, [4, 6], BF16)
  params = f32.init(jax.random.PRNGKey(0), batch.obs, batch.game_id)
  same = bf16.init(jax.random.PRNGKey(0), batch.obs, batch.game_id)
  assert jax.tree.structure(params) == jax.tree.structure(same)
  for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(same), strict=True):
    assert x.dtype == y.dtype == jnp.float32
    np.testing.assert_array_equal(x, y)

  params = _with_unit_norm_scales(params)
  want, got = (
    f32.apply(params, batch.obs, batch.game_id),
    bf16.apply(params, batch.obs, batch.game_id),
  )
  assert got.logits.dtype == got.q_values.dtype == jnp.float32
  rms = lambda x: float(np.sqrt(np.mean(np.square(x))))  # noqa: E731
  assert rms(got.logits - want.logits) < 0.03 * rms(want.logits)
  np.testing.assert_allclose(jax.nn.softmax(got.logits), jax.nn.softmax(want.logits), atol=0.01)
  legal = np.asarray(want.legal_actions)
  np.testing.assert_allclose(
    np.asarray(got.q_values)[legal], np.asarray(want.q_values)[legal], atol=0.15
  )  # fmt: skip  (0.75% of the support's range)


def test_bfloat16_dt_is_close_to_float32():
  config = transformer.TransformerConfig(num_layers=4, width=64, num_heads=4, dropout_rate=0.0)
  rng = np.random.default_rng(0)
  obs = rng.integers(0, 256, (8, 84, 84, 4), dtype=np.uint8)
  tokens = rng.integers(0, 4, (8, 4)).astype(np.int32)
  f32, bf16 = transformer.make_network(config), transformer.make_network(config, BF16)
  params = f32.init(jax.random.PRNGKey(0), obs, tokens, tokens, tokens)
  want = f32.apply(params, None, obs, tokens, tokens, tokens)
  got = bf16.apply(params, None, obs, tokens, tokens, tokens)
  for name, w, g in zip(want._fields, want, got, strict=True):
    assert g.dtype == jnp.float32, name
    np.testing.assert_allclose(jax.nn.softmax(g), jax.nn.softmax(w), atol=0.006, err_msg=name)


# ----------------------------------------------------------------------------- remat


@pytest.mark.parametrize("method, dtype", [("scaled_ql", jnp.float32), ("dt", jnp.bfloat16)])
def test_remat_gives_the_same_parameters_and_gradients(method, dtype):
  if method == "scaled_ql":
    method, data = ScaledQL(network=TINY), _batch()
  else:
    method, data = DecisionTransformer(transformer=TINY_DT), _windows()  # with dropout
  plain = method.build(GAMES, compute.ComputeConfig(np.dtype(dtype), remat=False))
  remat = method.build(GAMES, compute.ComputeConfig(np.dtype(dtype), remat=True))
  params = plain.init(jax.random.PRNGKey(0))
  remat_params = remat.init(jax.random.PRNGKey(0))
  assert jax.tree.structure(params) == jax.tree.structure(remat_params)
  for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(remat_params), strict=True):
    np.testing.assert_array_equal(x, y)

  rng = jax.random.PRNGKey(1)  # the same dropout masks, recomputed or kept
  grad_fns = [jax.grad(lambda p, learner=learner: learner.loss_fn(p, p, data, rng)[0])
              for learner in (plain, remat)]  # fmt: skip
  assert any(e.primitive.name in ("checkpoint", "remat2") for e in _traced(grad_fns[1], params))
  want, got = (jax.jit(fn)(params) for fn in grad_fns)
  for x, y in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
