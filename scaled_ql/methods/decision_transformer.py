"""The Multi-Game Decision Transformer (Lee et al. 2022) as a method on the shared trainer.

It trains on `WindowBatch`es (bind `data.ReplayDataset.windows = True`): 4 consecutive steps
of one episode, their actions mapped from each game's minimal set to ALE's full 18 actions,
returns-to-go discretised to one class per integer in `return_range` (clipped), rewards as
classes (none, positive, terminal, negative). The loss is the mean of the action, return and
reward cross-entropies, each averaged over its classes as well as its steps (the released
notebook's `cross_entropy` and `sequence_loss`: weights 1/18, 1/121 and 1/4); the action and
reward terms skip padding steps, the return term keeps them (see below).

Acting ("expert-action inference", MGDT section 3.4 and the notebook's `optimal_action`): the
policy draws `num_return_samples` returns from the model's return distribution tilted
towards high returns, log P(R) + kappa (R - Rlow) / (Rhigh - Rlow), keeps the highest, puts
it in the return-to-go token, then samples the action among the game's own actions, from the
top half of their logits (`action_top_percentile`). The policy keeps each environment's last
actions and rewards, and starts an episode's context with the zero-padding steps the data has.

With `single_return_token` (the released model's setting) only the first step's return is
an input: the network removes the later ones, and `_inputs` zeroes their classes, so a
training window and the acting context of the same steps give the network the same inputs
except step 0's return (drawn when acting). Step 0 is padding in the first 3 steps of every
episode; its return-to-go there is the episode's return, and the return loss is taken there
too, so the return drawn at an episode's start comes from a trained read-out (the notebook
pads an episode's start and draws step 0's return the same way).

Where ours differs from the notebook, and why:
  * temperatures divide the logits (the usual convention; 0 means argmax); the notebook
    multiplies them, so its return temperature 0.75 is our 1 / 0.75;
  * the top-percentile cut ranks a game's own actions only (the notebook's 18 outputs all
    compete, illegal ones included) and always keeps the best action (the notebook's strict
    `>` would drop every action when all logits tie);
  * kappa is the paper's 10 (the notebook's call passes an optimality weight of 0 and relies
    on the maximum of 128 draws alone);
  * 121 return classes, one per integer in [-20, 100] (the notebook builds 120 embeddings and
    clips returns to 100, a class its table lacks).
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from scaled_ql import compute, games, losses, optimizers, types
from scaled_ql import transformer as transformer_lib
from scaled_ql.methods import base

STEPS = types.OBSERVATION_SHAPE[-1]


def encode_returns(return_to_go, return_range: tuple[int, int]):
  """float [..] returns-to-go -> int32 class, one per integer in return_range (clipped)."""
  low, high = return_range
  return (jnp.clip(jnp.round(return_to_go), low, high) - low).astype(jnp.int32)


def encode_rewards(reward, terminal):
  """Clipped rewards and terminal flags [..] -> int32 classes: 0 none, 1 positive,
  2 terminal (the episode ends at the step), 3 negative."""
  classes = jnp.where(reward > 0, 1, jnp.where(reward < 0, 3, 0))
  return jnp.where(terminal, 2, classes).astype(jnp.int32)


class ActionTables(NamedTuple):
  """The games' action maps, indexed by game_id.

  Attributes:
    to_full: int32 [G, A_max], minimal-set index -> full-set id (0 in unused slots).
    to_minimal: int32 [G, 18], full-set id -> minimal-set index (0 where the game lacks it).
    legal: bool [G, 18], the game's own full-set actions.
  """

  to_full: np.ndarray
  to_minimal: np.ndarray
  legal: np.ndarray


def action_tables(game_names: Sequence[str]) -> ActionTables:
  """The action maps of `game_names` (game_id = index)."""
  max_actions = max(games.num_actions(g) for g in game_names)
  to_full = np.zeros((len(game_names), max_actions), np.int32)
  for g, game in enumerate(game_names):
    to_full[g, : games.num_actions(game)] = games.minimal_to_full(game)
  to_minimal = np.stack([games.full_to_minimal(g) for g in game_names])
  return ActionTables(to_full, np.maximum(to_minimal, 0), to_minimal >= 0)


def sample_returns(rng, logits, kappa: float, temperature: float, num_samples: int):
  """Return classes drawn towards high returns: [B, R] logits -> int32 [B].

  Draws from softmax((log P(R) + kappa * (R - Rlow) / (Rhigh - Rlow)) / temperature), the
  optimality-weighted distribution of MGDT, `num_samples` times, and keeps the highest.
  """
  tilt = kappa * jnp.linspace(0.0, 1.0, logits.shape[-1])
  log_p = jax.nn.log_softmax(logits, axis=-1)
  draws = jax.random.categorical(
    rng, (log_p + tilt) / temperature, shape=(num_samples, len(logits))
  )
  return jnp.max(draws, axis=0).astype(jnp.int32)


def top_percentile_logits(logits, legal, percentile: float | None):
  """[B, A] logits, bool [B, A] legal -> [B, A]: the legal actions whose logit exceeds the
  `percentile`-th percentile of the legal logits, and the best one; the rest -inf (None:
  every legal action)."""
  logits = jnp.where(legal, logits, -jnp.inf)
  if percentile is None:
    return logits
  cut = jnp.nanpercentile(jnp.where(legal, logits, jnp.nan), percentile, axis=-1)  # [B]
  keep = (logits > cut[:, None]) | (logits == jnp.max(logits, axis=-1, keepdims=True))
  return jnp.where(keep, logits, -jnp.inf)


@dataclasses.dataclass(frozen=True)
class DecisionTransformer:
  """The DT's configuration (gin: `methods.DecisionTransformer`).

  Attributes:
    transformer: the network's shape.
    optimizer_fn: builds the optax optimizer (LAMB with warm-up, `optimizers.make_lamb`).
    kappa: weight of the optimality tilt towards high returns when acting (MGDT: 10).
    num_return_samples: returns drawn per step, the highest kept (the notebook: 128).
    return_temperature: divides the return logits when acting (the notebook multiplies
      them by 0.75: 1 / 0.75 here).
    action_temperature: divides the action logits when acting (0: argmax; the notebook: 1).
    action_top_percentile: actions are drawn among the game's actions whose logit exceeds
      this percentile of theirs (the notebook: 50); None draws among all of them.
    class_averaged_loss: average each cross-entropy over its classes too, as the notebook's
      `cross_entropy` does (weights 1/18, 1/121, 1/4); False weighs the three terms equally.
    name: the label of its runs in reports.
  """

  transformer: transformer_lib.TransformerConfig = transformer_lib.TransformerConfig()
  optimizer_fn: Callable = optimizers.make_lamb
  kappa: float = 10.0
  num_return_samples: int = 128
  return_temperature: float = 1.0 / 0.75
  action_temperature: float = 1.0
  action_top_percentile: float | None = 50.0
  class_averaged_loss: bool = True
  name: str = "dt"

  def __post_init__(self):
    if self.num_return_samples < 1:
      raise ValueError(f"num_return_samples must be >= 1, got {self.num_return_samples}.")
    if self.return_temperature <= 0 or self.action_temperature < 0:
      raise ValueError(
        "return_temperature must be > 0 and action_temperature >= 0, got "
        f"{self.return_temperature} and {self.action_temperature}."
      )
    if self.action_top_percentile is not None and not 0 <= self.action_top_percentile < 100:
      raise ValueError(
        f"action_top_percentile must be in [0, 100) or None, got {self.action_top_percentile}."
      )

  def config(self) -> dict:
    values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    del values["optimizer_fn"]
    values["transformer"] = dataclasses.asdict(self.transformer)
    return values

  @classmethod
  def from_config(cls, config: dict) -> "DecisionTransformer":
    shape = {k: tuple(v) if isinstance(v, list) else v for k, v in config["transformer"].items()}
    return cls(**{**config, "transformer": transformer_lib.TransformerConfig(**shape)})

  def build(
    self, game_names: Sequence[str], compute_config: compute.ComputeConfig = compute.FLOAT32
  ) -> base.Learner:
    games.validate_games(game_names)
    network = transformer_lib.make_network(self.transformer, compute_config)
    tables = action_tables(game_names)
    example = types.zeros_window_batch(1)
    zeros = jnp.zeros((1, STEPS), jnp.int32)

    def sample_actions(params, rng, batch: types.WindowBatch, num_samples: int):
      """int32 [B, k]: minimal-set actions for each window's last step (context as given)."""
      return self._sample(network, params, rng, batch, tables, num_samples)

    return base.Learner(
      init=lambda rng: network.init(rng, example.obs, zeros, zeros, zeros),
      loss_fn=self._make_loss(network, tables, len(game_names)),
      optimizer=self.optimizer_fn(),
      target_update_period=None,
      example_batch=types.zeros_window_batch,
      make_policy=make_policy_factory(sample_actions),
      transfer=lambda src, src_info, params: self._transfer(src, src_info),
      per_game=lambda params: jax.tree.map(lambda _: False, params),
      check_batch=self._check_batch,
      sample_actions=sample_actions,
    )

  # ---------------------------------------------------------------------------------------------
  # Training.

  def _inputs(self, batch: types.WindowBatch, tables: ActionTables):
    """(return classes, full-set actions, reward classes), each int32 [B, T].

    With `single_return_token` the later steps' return classes are 0: the network ignores
    them, and training and acting then feed it the same values."""
    to_full = jnp.asarray(tables.to_full)[batch.game_id]  # [B, A_max]
    actions = jnp.take_along_axis(to_full, batch.action, axis=1)
    return_bins = encode_returns(batch.return_to_go, self.transformer.return_range)
    if self.transformer.single_return_token:
      return_bins = return_bins * (jnp.arange(STEPS) == 0)
    return return_bins, actions, encode_rewards(batch.reward, batch.terminal)

  def _make_loss(self, network, tables: ActionTables, num_games: int):
    def loss_fn(params, target_params, batch: types.WindowBatch, rng):
      del target_params
      return_bins, actions, reward_classes = self._inputs(batch, tables)
      out = network.apply(params, rng, batch.obs, return_bins, actions, reward_classes, True)
      # Actions and rewards are learnt at real steps only (padding holds placeholders). Returns
      # are learnt at padding steps too: there the return-to-go is the episode's return, and
      # acting draws step 0's return there in an episode's first 3 steps.
      real = (~batch.padding).astype(jnp.float32)  # [B, T]
      return_weight = jnp.ones_like(real)
      if self.transformer.single_return_token:  # only the first step's return is modelled
        return_weight = return_weight * (jnp.arange(STEPS) == 0)

      def weighted_mean(x, weight):  # [B, T], [B, T] -> []
        return jnp.sum(x * weight) / jnp.maximum(jnp.sum(weight), 1.0)

      def ce(logits, labels):  # [B, T, C], [B, T] -> [B, T]
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        return loss / logits.shape[-1] if self.class_averaged_loss else loss

      action_ce = ce(out.action_logits, actions)
      terms = {
        "action_loss": weighted_mean(action_ce, real),
        "return_loss": weighted_mean(ce(out.return_logits, return_bins), return_weight),
        "reward_loss": weighted_mean(ce(out.reward_logits, reward_classes), real),
      }
      low, high = self.transformer.return_range
      outside = (batch.return_to_go < low) | (batch.return_to_go > high)
      per_example_action = jnp.sum(action_ce * real, 1) / jnp.maximum(jnp.sum(real, 1), 1.0)
      correct = jnp.argmax(out.action_logits, axis=-1) == actions
      acted_step = real * (jnp.arange(STEPS) == STEPS - 1)  # the step the policy acts at
      metrics = {
        "loss": sum(terms.values()) / len(terms),
        **terms,
        "action_accuracy": weighted_mean(correct, real),
        "action_accuracy_last_step": weighted_mean(correct, acted_step),
        "returns_clipped": weighted_mean(outside, real),
        "per_game/action_loss": losses.per_game_mean(per_example_action, batch.game_id, num_games),
        "per_game/batch_fraction": jnp.mean(jax.nn.one_hot(batch.game_id, num_games), axis=0),
      }
      return metrics["loss"], metrics

    return loss_fn

  def _check_batch(self, batch: types.WindowBatch) -> None:
    """Warns when the data's returns-to-go reach outside `return_range` (they are clipped)."""
    low, high = self.transformer.return_range
    real = ~batch.padding
    outside = int(np.sum(((batch.return_to_go < low) | (batch.return_to_go > high)) & real))
    if outside:
      logging.warning(
        "%d of %d returns-to-go in the first batch lie outside return_range [%d, %d] (from "
        "%.0f to %.0f) and are clipped; bind transformer.TransformerConfig.return_range to "
        "cover them.", outside, int(real.sum()), low, high, batch.return_to_go[real].min(),
        batch.return_to_go[real].max(),
      )  # fmt: skip

  def _transfer(self, source_params, source_info: dict):
    theirs = source_info.get("method_config", {}).get("transformer")
    if theirs is None:
      raise ValueError(
        f"init_from: the source run's method ({source_info.get('method')}) is not a Decision "
        "Transformer; start a DT from a DT run."
      )
    ours = dataclasses.asdict(self.transformer)
    changed = [f"  {k}: source {theirs[k]!r} vs configured {ours[k]!r}" for k in ours
               if (tuple(theirs[k]) if isinstance(theirs[k], list) else theirs[k]) != ours[k]]  # fmt: skip
    if changed:
      raise ValueError("init_from: the source DT is configured differently:\n" + "\n".join(changed))
    return jax.tree.map(np.asarray, jax.device_get(source_params))

  # ---------------------------------------------------------------------------------------------
  # Acting.

  def _sample(self, network, params, rng, batch, tables: ActionTables, num_samples: int):
    """Expert-action inference for the last step of each window -> int32 [B, k] minimal."""
    return_rng, action_rng = jax.random.split(rng)
    return_bins, actions, reward_classes = self._inputs(batch, tables)
    steps = [0] if self.transformer.single_return_token else range(STEPS)
    return_bins = jnp.zeros_like(return_bins)  # Drawn below; as `_inputs` gives the rest.
    for t in steps:  # Each step's return is drawn given the returns drawn before it.
      out = network.apply(params, None, batch.obs, return_bins, actions, reward_classes)
      drawn = sample_returns(
        jax.random.fold_in(return_rng, t), out.return_logits[:, t], self.kappa,
        self.return_temperature, self.num_return_samples,
      )  # fmt: skip
      return_bins = return_bins.at[:, t].set(drawn)
    out = network.apply(params, None, batch.obs, return_bins, actions, reward_classes)
    game_legal = jnp.asarray(tables.legal)[batch.game_id]  # [B, 18]
    logits = jnp.where(game_legal, out.action_logits[:, -1], -jnp.inf)  # [B, 18]
    if self.action_temperature == 0:
      full = jnp.repeat(jnp.argmax(logits, axis=-1)[:, None], num_samples, axis=1)
    else:
      logits = top_percentile_logits(logits, game_legal, self.action_top_percentile)
      full = jax.random.categorical(
        action_rng, logits / self.action_temperature, shape=(num_samples, len(logits))
      ).T  # [B, k]
    return jnp.take_along_axis(jnp.asarray(tables.to_minimal)[batch.game_id], full, axis=1)


class DTPolicy(types.Policy):
  """Expert-action inference with each environment's context of its last steps.

  The observation's 4 frames are the context's 4 steps; the policy keeps the actions (each
  game's minimal-set indices, as the data holds them: `_inputs` maps them to the full set)
  and clipped rewards of the 3 steps before the current one, zero at an episode's start, like
  the data's padding rows. The current step's action and reward are 0: the action read-out
  comes before those tokens.
  """

  def __init__(self, sample, params, seed: int = 0):
    self._sample, self._params = sample, params
    self._rng, self._calls = jax.random.PRNGKey(seed), 0
    self._actions = self._rewards = self._game_id = None  # [N, T - 1] each, game_id [N]

  def _context(self, obs, game_id) -> types.WindowBatch:
    n = len(obs)
    if self._actions is None or len(self._actions) != n:
      self._actions = np.zeros((n, STEPS - 1), np.int32)
      self._rewards = np.zeros((n, STEPS - 1), np.float32)
    self._game_id = np.asarray(game_id, np.int32)
    pad = np.zeros((n, 1))
    return types.WindowBatch(
      obs=obs,
      action=np.concatenate([self._actions, pad.astype(np.int32)], axis=1),
      reward=np.concatenate([self._rewards, pad.astype(np.float32)], axis=1),
      return_to_go=np.zeros((n, STEPS), np.float32),
      terminal=np.zeros((n, STEPS), bool),
      padding=np.zeros((n, STEPS), bool),
      game_id=self._game_id,
    )

  def sample_actions(self, obs, game_id, num_samples: int) -> np.ndarray:
    """int32 [N, k]: k actions drawn for each environment's current step."""
    rng = jax.random.fold_in(self._rng, self._calls)
    self._calls += 1
    return np.asarray(self._sample(self._params, rng, self._context(obs, game_id), num_samples))

  def __call__(self, obs, game_id):
    return self.sample_actions(obs, game_id, 1)[:, 0]

  def observe(self, action, reward, ended):
    """Appends the step's action and clipped reward; clears the context of ended episodes."""
    self._actions = np.concatenate([self._actions[:, 1:], np.asarray(action, np.int32)[:, None]], 1)
    clipped = np.clip(np.asarray(reward, np.float32), -1.0, 1.0)
    self._rewards = np.concatenate([self._rewards[:, 1:], clipped[:, None]], 1)
    self._actions[ended], self._rewards[ended] = 0, 0.0


def make_policy_factory(sample_actions):
  """params -> DTPolicy; the sampling is jitted once, here (k static)."""
  sample = jax.jit(sample_actions, static_argnums=3)
  return lambda params: DTPolicy(sample, params)
