"""Scaled QL losses: C51 (or MSE) TD loss + CQL penalty + BC cross-entropy.

    loss = td_weight * TD + cql_alpha * CQL + bc_weight * BC      (mean over the batch)

Each term is a per-example function with time-indexed names (`q_tm1`, `a_tm1`, `r_t`,
`discount_t`) batched with `jax.vmap`. `r_t` is already the n-step return and `discount_t`
gamma^n (0 at a terminal), see `types.Batch`. `td_weight=0, bc_weight=1` is plain behaviour
cloning; intermediate weights interpolate between BC and offline RL.

rlax has these TD losses, but rlax 0.1.9 does not import with jax 0.10 (through
distrax/tensorflow_probability), and its categorical Q-learning takes the argmax over all
action slots while ours must skip each game's illegal ones; so the few lines live here.
"""

import dataclasses
from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp

from scaled_ql import types
from scaled_ql.networks import ILLEGAL_ACTION_VALUE

LossFn = Callable[..., tuple[jnp.ndarray, dict[str, jnp.ndarray]]]


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Plain-value loss configuration; the support must match the network's.

  Attributes:
    td: "c51" (categorical cross-entropy TD) or "mse" (squared TD error, the ablation).
    td_weight: weight of the TD loss (0 skips the target network entirely).
    cql_alpha: weight of the CQL penalty. Related work uses 0.05-0.1 for C51+CQL
      (DESIGN.md section 4); the paper's own value is unverified.
    bc_weight: weight of the behaviour-cloning cross-entropy on the data action.
    double_dqn: select the bootstrap action with the online network.
    num_atoms, v_min, v_max: the C51 support (dopamine's default [-10, 10], 51 atoms).
  """

  td: str = "c51"
  td_weight: float = 1.0
  cql_alpha: float = 0.1
  bc_weight: float = 0.0
  double_dqn: bool = False
  num_atoms: int = 51
  v_min: float = -10.0
  v_max: float = 10.0


# ----------------------------------------------------------------------------- per-example terms


def categorical_projection(z_t: jnp.ndarray, p_t: jnp.ndarray, atoms: jnp.ndarray) -> jnp.ndarray:
  """Projects a distribution on support z_t onto evenly spaced atoms (Bellemare et al. 2017).

  Each source atom's mass is split between its two neighbouring target atoms in
  proportion to closeness, after clipping the source support to [atoms[0], atoms[-1]].

  Args:
    z_t: [M] source support (any order, any values).
    p_t: [M] source probabilities.
    atoms: [N] evenly spaced target support.

  Returns:
    [N] the projected probabilities.
  """
  chex.assert_rank([z_t, p_t, atoms], 1)
  chex.assert_equal_shape([z_t, p_t])
  delta = atoms[1] - atoms[0]
  z_t = jnp.clip(z_t, atoms[0], atoms[-1])
  weights = jnp.clip(1.0 - jnp.abs(z_t[None, :] - atoms[:, None]) / delta, 0.0, 1.0)  # [N, M]
  return weights @ p_t


def categorical_td_loss(
  logits_tm1, a_tm1, r_t, discount_t, logits_t, q_t_selector, atoms
) -> jnp.ndarray:
  """C51 cross-entropy between the projected target and the data action's distribution.

  Args:
    logits_tm1: [A, N] online logits at s_tm1.
    a_tm1: [] data action.
    r_t: [] n-step reward.
    discount_t: [] gamma^n, 0 at a terminal.
    logits_t: [A, N] target-network logits at s_t.
    q_t_selector: [A] Q-values choosing the bootstrap action (illegal slots masked).
    atoms: [N] the support.

  Returns:
    [] the loss.
  """
  chex.assert_rank([logits_tm1, a_tm1, r_t, discount_t, logits_t, q_t_selector], [2, 0, 0, 0, 2, 1])
  chex.assert_equal_shape([logits_tm1, logits_t])
  a_t = jnp.argmax(q_t_selector)
  p_t = jax.nn.softmax(logits_t[a_t])
  target = categorical_projection(r_t + discount_t * atoms, p_t, atoms)
  target = jax.lax.stop_gradient(target)
  return -jnp.sum(target * jax.nn.log_softmax(logits_tm1[a_tm1]))


def mse_td_loss(q_tm1, a_tm1, r_t, discount_t, q_t, q_t_selector) -> jnp.ndarray:
  """Half squared TD error of Q(s_tm1, a_tm1) against r_t + discount_t Q_target(s_t, a_t).

  Args:
    q_tm1: [A] online Q at s_tm1.
    a_tm1: [] data action.
    r_t: [] n-step reward.
    discount_t: [] gamma^n, 0 at a terminal.
    q_t: [A] target-network Q at s_t.
    q_t_selector: [A] Q-values choosing the bootstrap action (illegal slots masked).

  Returns:
    [] the loss.
  """
  chex.assert_rank([q_tm1, a_tm1, r_t, discount_t, q_t, q_t_selector], [1, 0, 0, 0, 1, 1])
  target = jax.lax.stop_gradient(r_t + discount_t * q_t[jnp.argmax(q_t_selector)])
  return 0.5 * jnp.square(target - q_tm1[a_tm1])


def cql_penalty(q_tm1, a_tm1, legal_tm1) -> jnp.ndarray:
  """CQL(H) penalty: logsumexp over the game's legal actions of Q, minus Q of the data.

  Args:
    q_tm1: [A] Q-values at s_tm1 (the categorical mean for C51).
    a_tm1: [] data action.
    legal_tm1: [A] bool, the game's own actions.

  Returns:
    [] the penalty (>= 0 up to log of the number of legal actions' slack).
  """
  chex.assert_rank([q_tm1, a_tm1, legal_tm1], [1, 0, 1])
  q_legal = jnp.where(legal_tm1, q_tm1, ILLEGAL_ACTION_VALUE)
  return jax.nn.logsumexp(q_legal) - q_tm1[a_tm1]


def bc_loss(q_tm1, a_tm1, legal_tm1) -> jnp.ndarray:
  """Cross-entropy of the data action under softmax(Q) over the game's legal actions.

  Args:
    q_tm1: [A] Q-values (policy logits) at s_tm1.
    a_tm1: [] data action.
    legal_tm1: [A] bool, the game's own actions.

  Returns:
    [] the loss.
  """
  chex.assert_rank([q_tm1, a_tm1, legal_tm1], [1, 0, 1])
  q_legal = jnp.where(legal_tm1, q_tm1, ILLEGAL_ACTION_VALUE)
  return -jax.nn.log_softmax(q_legal)[a_tm1]


def per_game_mean(values: jnp.ndarray, game_id: jnp.ndarray, num_games: int) -> jnp.ndarray:
  """Mean of `values` [B] per game -> [num_games]; games absent from the batch give 0."""
  one_hot = jax.nn.one_hot(game_id, num_games, dtype=values.dtype)  # [B, G]
  return (values @ one_hot) / jnp.maximum(jnp.sum(one_hot, axis=0), 1.0)


# ----------------------------------------------------------------------------- the batch loss


def make_loss(config: LossConfig, apply_fn: Callable, num_games: int) -> LossFn:
  """Builds loss_fn(params, target_params, batch, rng) -> (loss [], metrics).

  Args:
    config: the loss configuration.
    apply_fn: network apply(params, obs, game_id) -> networks.NetworkOutput.
    num_games: G, the length of the per-game metric vectors.

  Returns:
    The loss function. Metrics hold scalars (`loss`, `td_loss`, `cql_loss`, `bc_loss`,
    `q_mean`: mean Q of the data actions, `q_max`: mean max-Q) and [G] vectors
    (`per_game/td_loss`, `per_game/cql_loss`, `per_game/q_mean`, `per_game/batch_fraction`).
  """
  if config.td not in ("c51", "mse"):
    raise ValueError(f"LossConfig.td must be 'c51' or 'mse', got {config.td!r}.")
  atoms = jnp.linspace(config.v_min, config.v_max, config.num_atoms, dtype=jnp.float32)

  def td_losses(params, target_params, batch, online):
    """[B] TD losses; the bootstrap action comes from the target or the online network."""
    target = jax.lax.stop_gradient(apply_fn(target_params, batch.next_obs, batch.game_id))
    selector = target.q_values
    if config.double_dqn:
      selector = jax.lax.stop_gradient(apply_fn(params, batch.next_obs, batch.game_id).q_values)
    args = (batch.action, batch.reward, batch.discount)
    if config.td == "c51":
      chex.assert_axis_dimension(online.logits, 2, config.num_atoms)
      loss = jax.vmap(categorical_td_loss, in_axes=(0, 0, 0, 0, 0, 0, None))
      return loss(online.logits, *args, target.logits, selector, atoms)
    return jax.vmap(mse_td_loss)(online.q_values, *args, target.q_values, selector)

  def loss_fn(params, target_params, batch: types.Batch, rng):
    del rng  # No stochastic layers; kept so that augmentation/dropout need no API change.
    online = apply_fn(params, batch.obs, batch.game_id)
    zeros = jnp.zeros(batch.action.shape, jnp.float32)
    td = td_losses(params, target_params, batch, online) if config.td_weight else zeros
    cql = jax.vmap(cql_penalty)(online.q_values, batch.action, online.legal_actions)
    bc = jax.vmap(bc_loss)(online.q_values, batch.action, online.legal_actions)
    per_example = config.td_weight * td + config.cql_alpha * cql + config.bc_weight * bc

    q_taken = jnp.take_along_axis(online.q_values, batch.action[:, None], axis=1)[:, 0]
    q_max = jnp.max(online.q_values, axis=1)
    metrics = {
      "loss": jnp.mean(per_example),
      "td_loss": jnp.mean(td),
      "cql_loss": jnp.mean(cql),
      "bc_loss": jnp.mean(bc),
      "q_mean": jnp.mean(q_taken),
      "q_max": jnp.mean(q_max),
      "per_game/td_loss": per_game_mean(td, batch.game_id, num_games),
      "per_game/cql_loss": per_game_mean(cql, batch.game_id, num_games),
      "per_game/q_mean": per_game_mean(q_taken, batch.game_id, num_games),
      "per_game/batch_fraction": jnp.mean(jax.nn.one_hot(batch.game_id, num_games), axis=0),
    }
    return metrics["loss"], metrics

  return loss_fn
