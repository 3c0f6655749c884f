"""Scaled QL (Kumar et al., ICLR 2023): a TD loss (C51, or MSE as the ablation) plus CQL.

    loss = td_weight * TD + cql_alpha * CQL + bc_weight * BC     (mean over the batch)

on the multi-game Q-network, with a hard target-network copy every `target_update_period`
steps. `bc_weight > 0` interpolates towards behaviour cloning (gin/ablations/bc_rl_*.gin).
"""

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from scaled_ql import compute, losses, networks, optimizers, types
from scaled_ql.methods import base, q_network

_TD_LOSSES = {"C51": losses.C51, "MSE": losses.MSE}


@dataclasses.dataclass(frozen=True)
class ScaledQL:
  """Scaled QL's configuration (gin: `methods.ScaledQL`).

  Attributes:
    network: the multi-game Q-network.
    td_loss: `losses.C51()` (needs a distributional network) or `losses.MSE()`.
    td_weight: weight of the TD loss.
    cql_alpha: weight of the CQL penalty. Related work uses 0.05-0.1 for C51+CQL
      (DESIGN.md section 4); the paper's own value is unverified.
    bc_weight: weight of a behaviour-cloning cross-entropy on softmax(Q) (0: none).
    double_dqn: choose the bootstrap action with the online network.
    target_update_period: gradient steps between hard target-network updates.
    optimizer_fn: builds the optax optimizer (a gin reference, so its own bindings apply).
    name: the label of its runs in reports.
  """

  network: networks.NetworkConfig
  td_loss: losses.TDLoss = losses.C51()
  td_weight: float = 1.0
  cql_alpha: float = 0.1
  bc_weight: float = 0.0
  double_dqn: bool = False
  target_update_period: int = 2_000
  optimizer_fn: Callable = optimizers.make_optimizer
  name: str = "scaled_ql"

  def __post_init__(self):
    if self.td_loss.distributional != self.network.distributional:
      raise ValueError(
        f"ScaledQL.td_loss={type(self.td_loss).__name__}() needs a "
        f"{'distributional' if self.td_loss.distributional else 'scalar'} network: bind "
        f"networks.NetworkConfig.distributional = {self.td_loss.distributional}."
      )
    if self.target_update_period < 1:
      raise ValueError(f"target_update_period must be >= 1, got {self.target_update_period}.")

  def config(self) -> dict:
    values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    del values["optimizer_fn"]
    values["network"] = dataclasses.asdict(self.network)
    values["td_loss"] = type(self.td_loss).__name__
    return values

  @classmethod
  def from_config(cls, config: dict) -> "ScaledQL":
    network = q_network.network_config(config["network"])
    td_loss = _TD_LOSSES[config["td_loss"]]()
    return cls(**{**config, "network": network, "td_loss": td_loss})

  def build(
    self, game_names: Sequence[str], compute_config: compute.ComputeConfig = compute.FLOAT32
  ) -> base.Learner:
    return q_network.build_learner(
      self.network, game_names, self.make_loss, self.optimizer_fn(), self.target_update_period,
      compute_config=compute_config,
    )  # fmt: skip

  def make_loss(self, apply_fn, num_games: int):
    """loss_fn(params, target_params, batch, rng) -> (loss [], metrics)."""
    atoms = networks.support(self.network)

    def loss_fn(params, target_params, batch: types.Batch, rng):
      del rng  # No stochastic layers; kept so that augmentation/dropout need no API change.
      online = apply_fn(params, batch.obs, batch.game_id)
      target = jax.lax.stop_gradient(apply_fn(target_params, batch.next_obs, batch.game_id))
      selector = target.q_values  # [B, A], illegal slots masked.
      if self.double_dqn:
        selector = jax.lax.stop_gradient(apply_fn(params, batch.next_obs, batch.game_id).q_values)
      td = self.td_loss(online, target, selector, batch, atoms)  # [B]
      cql = jax.vmap(losses.cql_penalty)(online.q_values, batch.action, online.legal_actions)
      per_example = self.td_weight * td + self.cql_alpha * cql
      metrics = {}
      if self.bc_weight:
        bc = jax.vmap(losses.bc_loss)(online.q_values, batch.action, online.legal_actions)
        per_example += self.bc_weight * bc
        metrics["bc_loss"] = jnp.mean(bc)

      q_taken = jnp.take_along_axis(online.q_values, batch.action[:, None], axis=1)[:, 0]
      metrics.update({
        "loss": jnp.mean(per_example),
        "td_loss": jnp.mean(td),
        "cql_loss": jnp.mean(cql),
        "q_mean": jnp.mean(q_taken),
        "q_max": jnp.mean(jnp.max(online.q_values, axis=1)),
        "per_game/td_loss": losses.per_game_mean(td, batch.game_id, num_games),
        "per_game/cql_loss": losses.per_game_mean(cql, batch.game_id, num_games),
        "per_game/q_mean": losses.per_game_mean(q_taken, batch.game_id, num_games),
        "per_game/batch_fraction": jnp.mean(jax.nn.one_hot(batch.game_id, num_games), axis=0),
      })  # fmt: skip
      return metrics["loss"], metrics

    return loss_fn
