"""Behaviour cloning on the multi-game Q-network (the paper's BC baseline).

The same network as Scaled QL, trained with the cross-entropy of the data action under
softmax of the network's per-game action values over the game's own actions; no target
network, no TD or CQL term.
"""

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from scaled_ql import compute, losses, networks, optimizers, types
from scaled_ql.methods import base, q_network


@dataclasses.dataclass(frozen=True)
class BC:
  """Behaviour cloning's configuration (gin: `methods.BC`).

  Attributes:
    network: the multi-game network; its expected action values are the policy's logits.
    optimizer_fn: builds the optax optimizer.
    act_by_sampling: the policy plays an action drawn from softmax(logits) over the game's
      actions, not the argmax (sampled BC: what a Q-guided policy with k = 1 plays).
    name: the label of its runs in reports.
  """

  network: networks.NetworkConfig
  optimizer_fn: Callable = optimizers.make_optimizer
  act_by_sampling: bool = False
  name: str = "bc"

  def config(self) -> dict:
    return {"network": dataclasses.asdict(self.network), "act_by_sampling": self.act_by_sampling,
            "name": self.name}  # fmt: skip

  @classmethod
  def from_config(cls, config: dict) -> "BC":
    return cls(
      network=q_network.network_config(config["network"]),
      act_by_sampling=config.get("act_by_sampling", False),
      name=config["name"],
    )

  def build(
    self, game_names: Sequence[str], compute_config: compute.ComputeConfig = compute.FLOAT32
  ) -> base.Learner:
    return q_network.build_learner(
      self.network, game_names, make_loss, self.optimizer_fn(), None, samples=True,
      act_by_sampling=self.act_by_sampling, compute_config=compute_config,
    )  # fmt: skip


def make_loss(apply_fn, num_games: int):
  """loss_fn(params, target_params (unused), batch, rng) -> (loss [], metrics)."""

  def loss_fn(params, target_params, batch: types.Batch, rng):
    del target_params, rng
    out = apply_fn(params, batch.obs, batch.game_id)  # out.q_values [B, A]: the policy's logits.
    bc = jax.vmap(losses.bc_loss)(out.q_values, batch.action, out.legal_actions)  # [B]
    accuracy = jnp.argmax(out.q_values, axis=1) == batch.action
    metrics = {
      "loss": jnp.mean(bc),
      "bc_loss": jnp.mean(bc),
      "accuracy": jnp.mean(accuracy),
      "per_game/bc_loss": losses.per_game_mean(bc, batch.game_id, num_games),
      "per_game/batch_fraction": jnp.mean(jax.nn.one_hot(batch.game_id, num_games), axis=0),
    }
    return metrics["loss"], metrics

  return loss_fn
