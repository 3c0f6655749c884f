"""The method seam: what a method builds for the trainer, and rebuilding a run's method.

    method = ScaledQL(network=..., td_loss=C51(), cql_alpha=0.05)     (a gin-bound dataclass)
    learner = method.build(game_names)                               (everything but data, state)
    trainer: params = learner.init(rng); loss_fn(params, target_params, batch, rng); ...

A run records its method in run_info.json as `method_class` (an import path) and
`method_config` (plain values); `load_method` rebuilds it from there, so evaluation,
behaviour policies and `init_from` work for any method without knowing which it is.
"""

import importlib
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import jax
import optax

from scaled_ql import checkpointing, runs, sharding, types

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
    transfer: (source params, source game names, params) -> params: the parameters of another
      run carried over for `init_from` (shared layers copied, per-game parts mapped by game
      name; games the source lacks keep `params`' fresh values). Raises ValueError naming every
      incompatible shape.
    per_game: params -> pytree of bools, True for leaves that hold one slice per game (heads):
      `init_from` may train the rest (the torso) at a lower learning rate or freeze it.
  """

  init: Callable[[jax.Array], Params]
  loss_fn: Callable
  optimizer: optax.GradientTransformation
  target_update_period: int | None
  example_batch: Callable[[int], Any]
  make_policy: Callable[[Params], types.Policy]
  transfer: Callable[[Params, Sequence[str], Params], Params]
  per_game: Callable[[Params], Any]


class Method(Protocol):
  """A learning method: a frozen dataclass of plain values, bound in gin.

  Attributes:
    name: the label of its runs in reports ("scaled_ql", "bc", ...).
  """

  name: str

  def build(self, game_names: Sequence[str]) -> Learner:
    """Builds the learner for these games (game_id = index in the list)."""
    ...

  def config(self) -> dict:
    """JSON-able values from which `from_config` rebuilds the method (optimizer aside)."""
    ...


def method_record(method: Method) -> dict:
  """What run_info.json records of a method."""
  cls = type(method)
  return {
    "method": method.name,
    "method_class": f"{cls.__module__}.{cls.__qualname__}",
    "method_config": method.config(),
  }


def load_method(info: dict) -> Method:
  """Rebuilds the method a run was trained with, from its run_info (see `method_record`)."""
  path = info.get("method_class")
  if not path:
    raise ValueError(
      "run_info.json records no method_class: the run was written by an older version; "
      "retrain it, or evaluate it with that version."
    )
  module_name, _, class_name = path.rpartition(".")
  return getattr(importlib.import_module(module_name), class_name).from_config(
    info["method_config"]
  )


def evaluated_params_field(info: dict) -> str:
  """The TrainState field a run's policy acts with: the moving average when it kept one."""
  return "ema_params" if info.get("ema_decay", 0.0) > 0 else "params"


def restore_params(workdir: str, step: int | None = None, field: str | None = None):
  """Restores a run's parameters from its checkpoint.

  Args:
    workdir: a run directory written by the trainer.
    step: the checkpoint step; the latest when None.
    field: "params" or "ema_params"; by default the ones its policy acts with.

  Returns:
    (params, learner, run_info, step); params placed on the local devices.
  """
  info = runs.read_run_info(workdir)
  learner = load_method(info).build(info["game_names"])
  field = field or evaluated_params_field(info)
  shapes = jax.eval_shape(learner.init, jax.random.PRNGKey(0))
  abstract = sharding.replicated_shapes(shapes, sharding.make_mesh())
  checkpointer = checkpointing.Checkpointer(workdir)
  step = checkpointer.latest_step() if step is None else step
  restored = checkpointer.restore({field: abstract}, step, partial=True)
  return restored[field], learner, info, step


def load_policy(workdir: str, step: int | None = None):
  """Restores a run's policy from its checkpoint.

  Args:
    workdir: a run directory written by the trainer.
    step: the checkpoint step; the latest when None.

  Returns:
    (policy, game_names, step): a `types.Policy` over the run's games (game_id = index in
    game_names).
  """
  params, learner, info, step = restore_params(workdir, step)
  return learner.make_policy(params), info["game_names"], step
