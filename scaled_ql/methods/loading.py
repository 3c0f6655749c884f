"""Rebuilding a run's method, parameters and policy from its run directory.

A run records its method in run_info.json as `method_class` (an import path) and
`method_config` (plain values, `Method.config()`); `load_method` rebuilds it from there, so
evaluation, behaviour policies and `init_from` work for any method without knowing which it is.
"""

import importlib

import jax

from scaled_ql import checkpointing, compute, runs, sharding
from scaled_ql.methods.base import Method


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
  """The TrainState field a run's policy acts with: the moving average when it kept one (the
  trainer's `evaluated_params` makes the same choice on a live state)."""
  return "ema_params" if info.get("ema_decay", 0.0) > 0 else "params"


def restore_params(
  workdir: str,
  step: int | None = None,
  field: str | None = None,
  compute_config: compute.ComputeConfig = compute.FLOAT32,
):
  """Restores a run's parameters from its checkpoint.

  Args:
    workdir: a run directory written by the trainer.
    step: the checkpoint step; the latest when None.
    field: "params" or "ema_params"; by default the ones its policy acts with.
    compute_config: how the rebuilt learner's networks compute (the parameters are the same).

  Returns:
    (params, learner, run_info, step); params placed on the local devices.
  """
  info = runs.read_run_info(workdir)
  learner = load_method(info).build(info["game_names"], compute_config)
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
