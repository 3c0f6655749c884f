"""The Decision Transformer: token layout and mask, tokenisation, action maps, learning, acting."""

import haiku as hk
import jax
import numpy as np
import optax
import pytest

from scaled_ql import atari, evaluate, games, transformer, types
from scaled_ql.methods import bc, decision_transformer, loading, q_network
from scaled_ql.methods.decision_transformer import DecisionTransformer
from scaled_ql.networks import NetworkConfig

TINY = transformer.TransformerConfig(num_layers=2, width=32, num_heads=2, dropout_rate=0.0)
GAMES = ["Breakout", "Pong"]


def _windows(batch_size=8, seed=0):
  rng = np.random.default_rng(seed)
  game_id = (np.arange(batch_size) % 2).astype(np.int32)
  action = rng.integers(0, 4, (batch_size, 4)).astype(np.int32)  # both games have >= 4
  padding = np.zeros((batch_size, 4), bool)
  padding[0, :2] = True
  return types.WindowBatch(
    obs=rng.integers(0, 256, (batch_size, 84, 84, 4), dtype=np.uint8),
    action=action,
    reward=rng.choice([-1.0, 0.0, 1.0], (batch_size, 4)).astype(np.float32),
    return_to_go=rng.integers(-3, 30, (batch_size, 4)).astype(np.float32),
    terminal=np.zeros((batch_size, 4), bool),
    padding=padding,
    game_id=game_id,
  )


def test_mask_is_block_causal():
  config = transformer.TransformerConfig(patch_size=42, single_return_token=False)  # 4 patches
  mask = transformer.attention_mask(config)
  per_step = config.tokens_per_step  # [p0 p1 p2 p3 R a r]
  assert per_step == 7 and mask.shape == (28, 28)
  patches = lambda t: range(t * per_step, t * per_step + 4)  # noqa: E731
  # Patches of one frame see each other, also the later ones.
  assert all(mask[i, j] for i in patches(1) for j in patches(1))
  # A token never sees a later step.
  assert not mask[np.ix_(range(per_step), range(per_step, 28))].any()
  assert not mask[np.ix_(patches(2), patches(3))].any()
  # Return sees the frame; action sees the return; reward sees the action; not the reverse.
  r, a, w = 4, 5, 6
  assert mask[r, :4].all() and mask[a, r] and mask[w, a]
  assert not mask[r, a] and not mask[a, w] and not mask[r, w]
  # With a single return token only the first step's return can be seen.
  single = transformer.attention_mask(transformer.TransformerConfig(patch_size=42))
  assert single[8, r] and not single[per_step + a, per_step + r]
  assert single[per_step + r, per_step + r]  # each token still sees itself


def test_network_outputs_do_not_depend_on_later_steps():
  network = transformer.make_network(TINY)
  batch = _windows(2)
  zeros = np.zeros((2, 4), np.int32)
  params = network.init(jax.random.PRNGKey(0), batch.obs, zeros, zeros, zeros)
  out = network.apply(params, None, batch.obs, zeros, zeros, zeros)
  later = batch.obs.copy()
  later[..., 2] = 255 - later[..., 2]  # step 2's frame changes
  changed = network.apply(params, None, later, zeros, zeros, zeros)
  np.testing.assert_allclose(out.action_logits[:, :2], changed.action_logits[:, :2], atol=1e-6)
  np.testing.assert_allclose(out.return_logits[:, :2], changed.return_logits[:, :2], atol=1e-6)
  assert not np.allclose(out.return_logits[:, 2], changed.return_logits[:, 2])
  # The action read-out sees the step's return-to-go; the return read-out does not.
  returns = zeros.copy()
  returns[:, 3] = 7
  moved = network.apply(params, None, batch.obs, returns, zeros, zeros)
  np.testing.assert_allclose(out.return_logits[:, 3], moved.return_logits[:, 3], atol=1e-6)
  assert not np.allclose(out.action_logits[:, 3], moved.action_logits[:, 3])
  # The reward read-out sees the step's action; the action read-out does not.
  actions = zeros.copy()
  actions[:, 3] = 2
  acted = network.apply(params, None, batch.obs, zeros, actions, zeros)
  np.testing.assert_allclose(out.action_logits[:, 3], acted.action_logits[:, 3], atol=1e-6)
  assert not np.allclose(out.reward_logits[:, 3], acted.reward_logits[:, 3])


def test_patches_and_attention_equal_haikus_conv_and_attention_on_the_same_parameters():
  # The DT's own PatchEmbedding and SelfAttention (fewer ops on CPU) must be haiku's strided
  # Conv2D and MultiHeadAttention under their parameter names, so that checkpoints carry over.
  rng = np.random.default_rng(0)
  obs = rng.integers(0, 256, (2, 84, 84, 4), dtype=np.uint8)
  x = rng.normal(size=(2, 12, 32)).astype(np.float32)
  mask = rng.random((12, 12)) < 0.5
  mask[np.arange(12), np.arange(12)] = True
  init = hk.initializers.VarianceScaling(1.0)

  def ours(obs, x):
    patches = transformer.PatchEmbedding(32, 14, name="patches")(obs)
    return patches, transformer.SelfAttention(4, init, name="attention")(x, mask)

  def haikus(obs, x):
    frames = np.moveaxis(obs, -1, 1).reshape(8, 84, 84, 1) / 255.0
    patches = hk.Conv2D(32, 14, stride=14, padding="VALID", name="patches")(frames)
    attention = hk.MultiHeadAttention(4, 8, w_init=init, name="attention")
    return patches.reshape(2, 4, 36, 32), attention(x, x, x, mask=mask[None, None])

  ours, haikus = (
    hk.without_apply_rng(hk.transform(ours)),
    hk.without_apply_rng(hk.transform(haikus)),
  )
  params = haikus.init(jax.random.PRNGKey(0), obs, x)
  assert jax.tree.map(np.shape, ours.init(jax.random.PRNGKey(0), obs, x)) == jax.tree.map(
    np.shape, params
  )
  for got, want in zip(ours.apply(params, obs, x), haikus.apply(params, obs, x), strict=True):
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_attention_at_chosen_queries_is_the_full_attentions_rows():
  # The DT's last block computes only the read-out tokens (`queries`).
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 12, 32)).astype(np.float32)
  mask = np.tril(np.ones((12, 12), bool))
  queries = np.array([1, 5, 11])
  attention = hk.without_apply_rng(
    hk.transform(
      lambda x, queries: transformer.SelfAttention(4, hk.initializers.VarianceScaling(1.0))(
        x, mask, queries
      )
    )
  )
  params = attention.init(jax.random.PRNGKey(0), x, None)
  full, part = attention.apply(params, x, None), attention.apply(params, x, queries)
  assert full.shape == (2, 12, 32) and part.shape == (2, 3, 32)
  np.testing.assert_allclose(part, full[:, queries], atol=1e-6)


def test_returns_and_rewards_are_tokenised_as_mgdt():
  rtg = np.array([-25.0, -20.0, 0.0, 3.0, 100.0, 130.0])
  np.testing.assert_array_equal(
    decision_transformer.encode_returns(rtg, (-20, 100)), [0, 0, 20, 23, 120, 120]
  )
  reward = np.array([0.0, 1.0, -1.0, 1.0, 0.0])
  terminal = np.array([False, False, False, True, True])
  np.testing.assert_array_equal(
    decision_transformer.encode_rewards(reward, terminal), [0, 1, 3, 2, 2]
  )
  assert TINY.num_returns == 121


def test_action_maps_round_trip_for_every_game():
  tables = decision_transformer.action_tables(games.ALL_GAMES)
  for g, game in enumerate(games.ALL_GAMES):
    n = games.num_actions(game)
    full = tables.to_full[g, :n]
    np.testing.assert_array_equal(tables.to_minimal[g, full], np.arange(n))
    assert tables.legal[g].sum() == n and tables.legal[g, full].all()
    np.testing.assert_array_equal(
      np.flatnonzero(tables.legal[g]), sorted(games.MINIMAL_ACTIONS[game])
    )


def test_returns_are_drawn_towards_high_returns():
  logits = np.zeros((2000, 121), np.float32)  # a flat return distribution
  rng = jax.random.PRNGKey(0)
  plain = decision_transformer.sample_returns(rng, logits, 0.0, 1.0, 1)
  tilted = decision_transformer.sample_returns(rng, logits, 10.0, 1.0, 1)
  best_of_8 = decision_transformer.sample_returns(rng, logits, 0.0, 1.0, 8)
  assert abs(float(plain.mean()) - 60) < 3  # uniform over 0..120
  # kappa 10: p(R) ~ exp(10 R / 120); its mean class is 120 - 12 + small = ~108.
  assert 105 < float(tilted.mean()) < 111
  assert float(best_of_8.mean()) > 100  # the max of 8 uniform draws: 120 * 8/9 = ~107


def _overfit(learner, batch, steps=150, learning_rate=3e-3):
  params = jax.jit(learner.init)(jax.random.PRNGKey(0))
  optimizer = optax.adam(learning_rate)
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, opt_state, i):
    (_, metrics), grads = jax.value_and_grad(learner.loss_fn, has_aux=True)(
      params, None, batch, jax.random.fold_in(jax.random.PRNGKey(1), i)
    )
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, metrics

  first = None
  for i in range(steps):
    params, opt_state, metrics = step(params, opt_state, i)
    first = first or metrics
  return first, metrics


def test_a_tiny_dt_overfits_a_fixed_batch():
  first, last = _overfit(DecisionTransformer(transformer=TINY).build(GAMES), _windows())
  assert last["loss"] < 0.2 * first["loss"]
  assert last["action_accuracy"] == 1.0


def test_a_tiny_bc_overfits_a_fixed_batch():
  batch = _windows()
  transitions = types.zeros_batch(8)._replace(
    obs=batch.obs, action=batch.action[:, -1], game_id=batch.game_id
  )
  small = NetworkConfig(torso="small", widths=(8, 8, 8, 8), projection_dim=16)
  first, last = _overfit(bc.BC(network=small).build(GAMES), transitions, steps=100)
  assert last["loss"] < 0.2 * first["loss"] and last["accuracy"] == 1.0


def test_dt_policy_plays_real_ale_through_the_evaluator():
  learner = DecisionTransformer(transformer=TINY).build(GAMES)
  policy = learner.make_policy(jax.jit(learner.init)(jax.random.PRNGKey(0)))
  seen = []
  observe = policy.observe

  def watching(action, reward, ended):  # the context of an ended episode starts empty
    observe(action, reward, ended)
    seen.append((ended.copy(), policy._actions.copy()))

  policy.observe = watching
  protocol = atari.Protocol(max_episode_steps=40)
  results = evaluate.evaluate(policy, GAMES, 2, protocol=protocol, num_envs_per_game=2)
  assert [len(results.games[g].returns) for g in GAMES] == [2, 2]
  assert all(length == 40 for g in GAMES for length in results.games[g].lengths)
  ended = [(e, a) for e, a in seen if e.any()]
  assert ended and all((a[e] == 0).all() for e, a in ended)
  # The actions the policy remembers are its own plays (minimal-set indices of the game).
  assert max(int(a.max()) for _, a in seen) < max(games.num_actions(g) for g in GAMES)


def test_bad_configurations_are_refused_with_what_fits():
  with pytest.raises(ValueError, match=r"patch_size=13 .* use one of \[1, 2, 3, 4, 6, 7, 12"):
    transformer.TransformerConfig(patch_size=13)
  with pytest.raises(ValueError, match="context_steps=5 does not fit the observation"):
    transformer.TransformerConfig(context_steps=5)
  with pytest.raises(ValueError, match="num_return_samples must be >= 1"):
    DecisionTransformer(num_return_samples=0)


def test_clipped_returns_are_counted_in_a_warning(caplog):
  learner = DecisionTransformer(transformer=TINY).build(GAMES)
  batch = _windows()
  batch.return_to_go[1] = [150.0, 140.0, 130.0, 120.0]
  with caplog.at_level("WARNING"):
    learner.check_batch(batch)
  assert "4 of 30 returns-to-go in the first batch lie outside return_range [-20, 100]" in (
    caplog.text
  )


def test_a_dt_run_is_not_a_q_network_and_rebuilds_from_run_info():
  method = DecisionTransformer(transformer=TINY, kappa=5.0)
  info = loading.method_record(method)
  assert loading.load_method(info) == method
  learner = bc.BC(network=NetworkConfig()).build(GAMES)
  params = jax.eval_shape(learner.init, jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match=r"source run's method \(dt\) has no multi-game Q-network"):
    q_network.transfer({}, {**info, "game_names": GAMES}, params, NetworkConfig(), GAMES)
