"""The method seam: what a method builds for the trainer.

    method = ScaledQL(network=..., td_loss=C51(), cql_alpha=0.05)     (a gin-bound dataclass)
    learner = method.build(game_names, compute_config)    (everything but data, state)
    trainer: params = learner.init(rng); loss_fn(params, target_params, batch, rng); ...

`loading.py` rebuilds a run's method and policy from its run directory.
"""

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import jax
import optax

from scaled_ql import compute, types

Params = Any  # A pytree of arrays.


class Learner(NamedTuple):
  """A method built for a list of games: everything the trainer needs but the data and state.

  Attributes:
    init: rng -> params (traceable: the trainer jits it onto the device mesh).
    loss_fn: (params, target_params, batch, rng) -> (loss [], metrics), metrics being scalars
      and [num_games] vectors; `target_params` is None without a target network.
    optimizer: the optax transformation.
    target_update_period: gradient steps between hard target-network copies; None keeps no
      target network.
    example_batch: local_batch_size -> a host batch of the structure, shapes and dtypes the
      loss expects (the trainer checks the data source's first batch against it).
    make_policy: params -> a `types.Policy` acting greedily (its jitted function is built once
      per learner, so periodic evaluations do not retrace).
    transfer: (source params, source run_info, params) -> params: the parameters of another
      run carried over for `init_from` (shared layers copied, per-game parts mapped by game
      name; games the source lacks keep `params`' fresh values). Raises ValueError naming every
      incompatible setting or shape.
    per_game: params -> pytree of bools, True for leaves that hold one slice per game (heads):
      `init_from` may train the rest (the torso) at a lower learning rate or freeze it.
    check_batch: the data source's first batch -> None; may warn about the data (e.g. values
      the method clips). None: nothing to check.
    sample_actions: (params, rng, batch, k) -> int32 [B, k], k actions drawn from the
      policy for each example's state (traceable); None for a method that does not sample
      (Q-guided selection re-ranks these).
    q_values: (params, obs, game_id) -> [B, A_max] action values, a game's illegal slots
      very negative (traceable); None for a method without a critic.
  """

  init: Callable[[jax.Array], Params]
  loss_fn: Callable
  optimizer: optax.GradientTransformation
  target_update_period: int | None
  example_batch: Callable[[int], Any]
  make_policy: Callable[[Params], types.Policy]
  transfer: Callable[[Params, dict, Params], Params]
  per_game: Callable[[Params], Any]
  check_batch: Callable[[Any], None] | None = None
  sample_actions: Callable | None = None
  q_values: Callable | None = None


class Method(Protocol):
  """A learning method: a frozen dataclass of plain values, bound in gin.

  Attributes:
    name: the label of its runs in reports ("scaled_ql", "bc", ...).
  """

  name: str

  def build(
    self, game_names: Sequence[str], compute_config: compute.ComputeConfig = compute.FLOAT32
  ) -> Learner:
    """Builds the learner for these games (game_id = index in the list), its networks computing
    as `compute_config` says (precision, rematerialisation: the parameters do not depend on it)."""
    ...

  def config(self) -> dict:
    """JSON-able values from which `from_config` rebuilds the method (optimizer aside)."""
    ...

  @classmethod
  def from_config(cls, config: dict) -> "Method":
    """The method `config()` describes (with the default optimizer: enough to act)."""
    ...
