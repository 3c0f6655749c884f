"""Loss terms as small objects and per-example functions, batched with `jax.vmap`.

    Scaled QL:  td_weight * TD + cql_alpha * CQL (+ bc_weight * BC, the interpolation ablation)
    BC:         BC

A TD loss is an object (`C51`, `MSE`) so that an ablation swaps it in gin
(`methods.ScaledQL.td_loss = @losses.MSE()`). Per-example functions use time-indexed names
(`q_tm1`, `a_tm1`, `r_t`, `discount_t`): `r_t` is already the n-step return and `discount_t`
gamma^n (0 at a terminal), see `types.Batch`.

The TD targets come from rlax. Its categorical double Q-learning bootstraps from the argmax of
the selector Q-values we pass, whose slots beyond a game's own actions hold
`networks.ILLEGAL_ACTION_VALUE`, so the bootstrap action is always one of the game's own; its
projection (`rlax.categorical_l2_project`) is elementwise, so the target distribution does not
depend on the device's default matmul precision (bf16 inputs on TPU, TF32 on recent GPUs).
The support is the network's (`networks.support`): one owner.
"""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import rlax

from scaled_ql.networks import ILLEGAL_ACTION_VALUE, NetworkOutput

# ----------------------------------------------------------------------------- TD losses


@dataclasses.dataclass(frozen=True)
class C51:
  """Categorical TD loss (Bellemare et al. 2017): cross-entropy to the projected target."""

  distributional = True  # Needs a network with categorical heads.

  def __call__(
    self, online: NetworkOutput, target: NetworkOutput, q_t_selector, batch, atoms
  ) -> jnp.ndarray:
    """[B] losses.

    Args:
      online: the online network at s_tm1 (logits [B, A, N]).
      target: the target network at s_t (logits [B, A, N]).
      q_t_selector: [B, A] Q-values choosing the bootstrap action (illegal slots masked).
      batch: the `types.Batch` (action, reward, discount [B]).
      atoms: [N] the support.
    """
    chex.assert_axis_dimension(online.logits, 2, atoms.shape[0])
    loss = jax.vmap(rlax.categorical_double_q_learning, in_axes=(None, 0, 0, 0, 0, None, 0, 0))
    return loss(atoms, online.logits, batch.action, batch.reward, batch.discount, atoms,
                target.logits, q_t_selector)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class MSE:
  """Half squared TD error on the expected Q (the paper's non-distributional ablation)."""

  distributional = False

  def __call__(self, online, target, q_t_selector, batch, atoms) -> jnp.ndarray:
    """[B] losses; arguments as `C51.__call__` (atoms unused)."""
    del atoms
    td = jax.vmap(rlax.double_q_learning)(
      online.q_values, batch.action, batch.reward, batch.discount, target.q_values, q_t_selector
    )
    return rlax.l2_loss(td)


TDLoss = C51 | MSE

# ----------------------------------------------------------------------------- per-example terms


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


def bc_loss(logits_tm1, a_tm1, legal_tm1) -> jnp.ndarray:
  """Cross-entropy of the data action under softmax(logits) over the game's legal actions.

  Args:
    logits_tm1: [A] action logits at s_tm1.
    a_tm1: [] data action.
    legal_tm1: [A] bool, the game's own actions.

  Returns:
    [] the loss.
  """
  chex.assert_rank([logits_tm1, a_tm1, legal_tm1], [1, 0, 1])
  logits_legal = jnp.where(legal_tm1, logits_tm1, ILLEGAL_ACTION_VALUE)
  return -jax.nn.log_softmax(logits_legal)[a_tm1]


def per_game_mean(values: jnp.ndarray, game_id: jnp.ndarray, num_games: int) -> jnp.ndarray:
  """Mean of `values` [B] per game -> [num_games]; games absent from the batch give 0."""
  one_hot = jax.nn.one_hot(game_id, num_games, dtype=values.dtype)  # [B, G]
  return (values @ one_hot) / jnp.maximum(jnp.sum(one_hot, axis=0), 1.0)
