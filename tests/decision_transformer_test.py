"""The Decision Transformer: token layout and mask, tokenisation, action maps, learning, acting."""

import dataclasses

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
  # With a single return token only the first step's return can be seen: no token sees a
  # later one, not even itself (the notebook hides a masked key from every query).
  single = transformer.attention_mask(transformer.TransformerConfig(patch_size=42))
  assert single[8, r] and single[r, r]
  later_returns = [t * per_step + r for t in range(1, 4)]
  assert not single[:, later_returns].any()
  assert single[per_step + r, : per_step + r].any()  # the read-out there still sees the past


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
  # With a return token per step, the action read-out sees the step's return-to-go; the
  # return read-out does not.
  every_return = transformer.make_network(dataclasses.replace(TINY, single_return_token=False))
  returns = zeros.copy()
  returns[:, 3] = 7
  before, moved = (every_return.apply(params, None, batch.obs, r, zeros, zeros)
                   for r in (zeros, returns))  # fmt: skip
  np.testing.assert_allclose(before.return_logits[:, 3], moved.return_logits[:, 3], atol=1e-6)
  assert not np.allclose(before.action_logits[:, 3], moved.action_logits[:, 3])
  # The reward read-out sees the step's action; the action read-out does not.
  actions = zeros.copy()
  actions[:, 3] = 2
  acted = network.apply(params, None, batch.obs, zeros, actions, zeros)
  np.testing.assert_allclose(out.action_logits[:, 3], acted.action_logits[:, 3], atol=1e-6)
  assert not np.allclose(out.reward_logits[:, 3], acted.reward_logits[:, 3])


@pytest.mark.parametrize("is_training", [False, True])
def test_later_return_bins_change_no_output_with_a_single_return_token(is_training):
  # The released model reads only step 0's return: the later return tokens must carry
  # nothing, in training (dropout on) and acting alike, whatever classes they hold.
  config = dataclasses.replace(TINY, dropout_rate=0.1)
  network = transformer.make_network(config)
  batch = _windows(4)
  rng = np.random.default_rng(3)
  actions = rng.integers(0, 18, (4, 4)).astype(np.int32)
  rewards = rng.integers(0, 4, (4, 4)).astype(np.int32)
  returns = rng.integers(0, 121, (4, 4)).astype(np.int32)
  params = network.init(jax.random.PRNGKey(0), batch.obs, returns, actions, rewards)
  key = jax.random.PRNGKey(7)
  out = network.apply(params, key, batch.obs, returns, actions, rewards, is_training)
  for other in (np.zeros_like(returns[:, 1:]), rng.integers(0, 121, (4, 3))):
    changed = returns.copy()
    changed[:, 1:] = other
    moved = network.apply(params, key, batch.obs, changed, actions, rewards, is_training)
    for got, want in zip(moved, out, strict=True):
      np.testing.assert_allclose(got, want, atol=1e-6)
  # Step 0's return is read: the action read-outs of every step move with it.
  changed = returns.copy()
  changed[:, 0] = (changed[:, 0] + 40) % 121
  moved = network.apply(params, key, batch.obs, changed, actions, rewards, is_training)
  for t in range(4):
    assert not np.allclose(moved.action_logits[:, t], out.action_logits[:, t])


class _RecordingNetwork:
  """The network with every `apply`'s inputs kept (obs, return bins, actions, rewards)."""

  def __init__(self, network):
    self._network, self.calls = network, []

  def apply(self, params, rng, obs, return_bins, actions, reward_classes, is_training=False):
    self.calls.append(tuple(np.asarray(x) for x in (obs, return_bins, actions, reward_classes)))
    return self._network.apply(params, rng, obs, return_bins, actions, reward_classes, is_training)


def _episode(length, seed=0):
  """A Breakout episode's (stacked observations [L, 84, 84, 4], minimal actions, clipped
  rewards), with the zero frames before its first frame that the data and the actor have."""
  rng = np.random.default_rng(seed)
  frames = np.concatenate([np.zeros((3, 84, 84), np.uint8),
                           rng.integers(1, 256, (length, 84, 84), dtype=np.uint8)])  # fmt: skip
  obs = np.stack([np.moveaxis(frames[i : i + 4], 0, -1) for i in range(length)])
  return obs, rng.integers(0, 4, length).astype(np.int32), rng.choice([0.0, 1.0], length)


@pytest.mark.parametrize("t", [1, 6])  # an episode's second step (2 padding steps) and later
def test_acting_gives_the_network_a_training_windows_inputs_but_step_0s_return(t):
  method = DecisionTransformer(transformer=TINY)
  tables = decision_transformer.action_tables(GAMES)
  recorder = _RecordingNetwork(transformer.make_network(TINY))
  learner = method.build(GAMES)
  params = jax.jit(learner.init)(jax.random.PRNGKey(0))
  obs, actions, rewards = _episode(t + 1)
  # The training window of steps t-3..t (steps before the episode are padding rows).
  rows = np.arange(t - 3, t + 1)
  real = rows >= 0
  pick = lambda x: np.where(real, x[np.maximum(rows, 0)], 0)  # noqa: E731
  window = types.WindowBatch(
    obs=obs[t][None], action=pick(actions)[None].astype(np.int32),
    reward=pick(rewards)[None].astype(np.float32),
    return_to_go=np.where(real, np.cumsum(rewards[::-1])[::-1][np.maximum(rows, 0)],
                          rewards.sum())[None].astype(np.float32),
    terminal=np.zeros((1, 4), bool), padding=~real[None], game_id=np.zeros(1, np.int32),
  )  # fmt: skip
  method._make_loss(recorder, tables, len(GAMES))(params, None, window, jax.random.PRNGKey(1))
  trained = recorder.calls[-1]
  # The policy acting through the same steps of the episode, with its own context.
  policy = decision_transformer.DTPolicy(
    lambda p, rng, batch, k: method._sample(recorder, p, rng, batch, tables, k), params
  )
  for i in range(t + 1):
    recorder.calls.clear()
    policy.sample_actions(obs[i][None], np.zeros(1, np.int32), 1)
    policy.observe(actions[i : i + 1], rewards[i : i + 1], np.zeros(1, bool))
  acted = recorder.calls[-1]  # the call whose action read-out is played
  np.testing.assert_array_equal(acted[0], trained[0])  # frames
  np.testing.assert_array_equal(acted[1][:, 1:], trained[1][:, 1:])  # later return classes
  # Actions and rewards of the steps before the acted one; the acted step's own action and
  # reward come after its action read-out (the causal test shows they cannot reach it).
  np.testing.assert_array_equal(acted[2][:, :3], trained[2][:, :3])
  np.testing.assert_array_equal(acted[3][:, :3], trained[3][:, :3])


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


def _notebook_cross_entropy(logits, labels):
  """MGDT notebook's `cross_entropy`: the mean over every axis, the class axis included."""
  one_hot = np.eye(logits.shape[-1])[labels]
  return float(np.mean(-one_hot * jax.nn.log_softmax(logits)))


def test_the_loss_is_the_notebooks_sequence_loss():
  # No padding here: the notebook's windows have none. Its `sequence_loss` averages its three
  # class-averaged cross-entropies, the return term over step 0 only (single_return_token).
  method = DecisionTransformer(transformer=TINY)
  tables = decision_transformer.action_tables(GAMES)
  batch = _windows()._replace(padding=np.zeros((8, 4), bool))
  network = transformer.make_network(TINY)
  params = jax.jit(method.build(GAMES).init)(jax.random.PRNGKey(0))
  return_bins, actions, rewards = method._inputs(batch, tables)
  out = network.apply(params, None, batch.obs, return_bins, actions, rewards, False)
  want = np.mean([
    _notebook_cross_entropy(out.action_logits, actions),
    _notebook_cross_entropy(out.return_logits[:, :1], return_bins[:, :1]),
    _notebook_cross_entropy(out.reward_logits, rewards),
  ])  # fmt: skip
  loss, metrics = method._make_loss(network, tables, 2)(params, None, batch, None)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  equal = dataclasses.replace(method, class_averaged_loss=False)
  loss, _ = equal._make_loss(network, tables, 2)(params, None, batch, None)
  np.testing.assert_allclose(
    loss, (metrics["action_loss"] * 18 + metrics["return_loss"] * 121
           + metrics["reward_loss"] * 4) / 3, rtol=1e-5)  # fmt: skip


def test_the_return_read_out_learns_at_padding_where_acting_draws_it():
  # In an episode's first 3 steps, step 0 is padding and acting draws its return there: the
  # return loss must count those steps (their return-to-go is the episode's return).
  method = DecisionTransformer(transformer=TINY)
  tables = decision_transformer.action_tables(GAMES)
  network = transformer.make_network(TINY)
  params = jax.jit(method.build(GAMES).init)(jax.random.PRNGKey(0))
  batch = _windows()  # window 0 starts with 2 padding steps
  loss_fn = method._make_loss(network, tables, 2)

  def return_loss(return_to_go):
    return float(loss_fn(params, None, batch._replace(return_to_go=return_to_go), None)[1][
      "return_loss"])  # fmt: skip

  moved = batch.return_to_go.copy()
  moved[0, 0] += 30  # only the padded window's step 0
  assert return_loss(moved) != return_loss(batch.return_to_go)


def _notebook_draws(rng, logits, temperature, shape, top_percentile=None):
  """MGDT notebook's `sample_from_logits`: the top-percentile cut, then `temperature *
  logits` (multiplied)."""
  if top_percentile is not None:
    cut = jax.numpy.percentile(logits, top_percentile, axis=-1)
    logits = jax.numpy.where(logits > cut[..., None], logits, -jax.numpy.inf)
  return jax.random.categorical(rng, temperature * logits, shape=shape)


def test_return_draws_equal_the_notebooks_with_its_temperature_inverted():
  logits = np.random.default_rng(0).normal(size=(64, 121)).astype(np.float32)
  rng = jax.random.PRNGKey(3)
  tilt = 10.0 * np.linspace(0.0, 1.0, 121)
  ours = decision_transformer.sample_returns(rng, logits, 10.0, 1 / 0.75, 128)
  theirs = np.max(_notebook_draws(rng, logits + tilt, 0.75, (128, 64)), axis=0)
  np.testing.assert_array_equal(ours, theirs)


def test_actions_are_drawn_from_the_top_half_of_the_games_own():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(3, 18)).astype(np.float32)
  every = np.ones((3, 18), bool)
  kept = decision_transformer.top_percentile_logits(logits, every, 50.0)
  # With every action legal, the notebook's cut keeps the same actions.
  theirs = _notebook_draws(jax.random.PRNGKey(0), logits, 1.0, (4000, 3), 50.0)
  drawn = np.eye(18, dtype=bool)[np.asarray(theirs)].any(axis=0)  # [3, 18]
  np.testing.assert_array_equal(np.isfinite(kept), drawn)
  # Breakout's 4 actions (NOOP, FIRE, RIGHT, LEFT): the cut ranks those only.
  legal = decision_transformer.action_tables(["Breakout"]).legal[[0, 0, 0]]
  kept = decision_transformer.top_percentile_logits(logits, legal, 50.0)
  for row, keep in zip(logits, np.isfinite(kept), strict=True):
    own = np.flatnonzero(legal[0])
    assert set(np.flatnonzero(keep)) == set(own[np.argsort(row[own])[-2:]])
  # All logits equal: the best (every tied one) is kept, never nothing.
  tied = decision_transformer.top_percentile_logits(np.zeros((1, 18)), every[:1], 50.0)
  assert np.isfinite(tied).all()


def test_argmax_acting_plays_the_sampled_policys_most_probable_action():
  """`dt_argmax` (action temperature 0) takes the action the sampled DT would draw at a
  vanishing temperature, given the same returns drawn (the same rng)."""
  greedy = DecisionTransformer(transformer=TINY, action_temperature=0.0).build(GAMES)
  cold = DecisionTransformer(
    transformer=TINY, action_temperature=1e-4, action_top_percentile=None
  ).build(GAMES)
  params = jax.jit(greedy.init)(jax.random.PRNGKey(2))
  batch = _windows(batch_size=16, seed=5)
  rng = jax.random.PRNGKey(7)
  ours = np.asarray(greedy.sample_actions(params, rng, batch, 3))  # [B, 3]
  assert (ours == ours[:, :1]).all()  # argmax: the same action in every draw
  np.testing.assert_array_equal(ours, np.asarray(cold.sample_actions(params, rng, batch, 3)))
  legal = [games.num_actions(GAMES[g]) for g in batch.game_id]
  assert (ours[:, 0] < np.asarray(legal)).all()


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
  assert last["action_accuracy"] == 1.0 and last["action_accuracy_last_step"] == 1.0
  assert first["action_accuracy_last_step"] < 1.0


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
  with pytest.raises(ValueError, match=r"action_top_percentile must be in \[0, 100\) or None"):
    DecisionTransformer(action_top_percentile=100.0)


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
