"""The learner: one immutable TrainState and a pure, jitted `(state, batch) -> (state, metrics)`.

    rng_t = fold_in(state.rng, state.step)                       (resuming needs no RNG state)
    grads = d loss_fn(params, target_params, batch, rng_t) / d params
    params <- optimizer(grads);  step <- step + 1
    target_params <- params  iff  step % target_update_period == 0   (if kept; branch-free)
    ema_params <- ema_decay * ema_params + (1 - ema_decay) * params   (if kept; for evaluation)

The step knows no method: `init_fn` and `loss_fn` come from a `methods.Learner`.

With a mesh, the step is jitted with NamedShardings: the batch split on its leading axis,
the state replicated (data parallel) or, with `state_sharding` from
`sharding.state_sharding(state, mesh, fsdp=True)`, split FSDP-style. The state is donated.
"""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from scaled_ql import sharding


class TrainState(NamedTuple):
  """Everything that changes during training.

  Attributes:
    params: online network parameters.
    target_params: target network parameters (a copy of params every period); None for a
      method without a target network.
    opt_state: optimizer state.
    step: int32 [], number of gradient steps taken.
    rng: base PRNG key (raw uint32 [2] or typed); step t uses fold_in(rng, t).
    ema_params: exponential moving average of params, the weights evaluated (Polyak
      averaging smooths the greedy policy's jumps between nearby checkpoints); None when
      not kept.
  """

  params: Any
  target_params: Any
  opt_state: Any
  step: jnp.ndarray
  rng: jnp.ndarray
  ema_params: Any = None


def _init(rng, init_fn, optimizer, target, ema) -> TrainState:
  init_rng, train_rng = jax.random.split(rng)
  params = init_fn(init_rng)
  return _state_from_params(params, train_rng, optimizer, target, ema)


def _state_from_params(params, rng, optimizer, target, ema) -> TrainState:
  # Separate buffers: params, target_params and ema_params are donated together in the step.
  target_params = jax.tree.map(jnp.copy, params) if target else None
  ema_params = jax.tree.map(jnp.copy, params) if ema else None
  step = jnp.zeros((), jnp.int32)
  return TrainState(params, target_params, optimizer.init(params), step, rng, ema_params)


def init_train_state(
  rng: jnp.ndarray,
  init_fn: Callable[[jnp.ndarray], Any],
  optimizer: optax.GradientTransformation,
  mesh: Mesh | None = None,
  fsdp: bool = False,
  target: bool = True,
  ema: bool = False,
  params: Any = None,
) -> TrainState:
  """Initialises parameters, target copy and optimizer state (jitted; on the mesh if given).

  Args:
    rng: a PRNGKey; the same key gives bit-identical parameters.
    init_fn: rng -> params (a `methods.Learner.init`).
    optimizer: the optax transformation.
    mesh: place the state on this mesh (replicated, or FSDP-split if fsdp).
    fsdp: split large parameters and optimizer moments over the mesh.
    target: keep `target_params` (for a loss with a target network).
    ema: keep `ema_params` (for `make_train_step(..., ema_decay > 0)`).
    params: start from these parameters instead of `init_fn`'s (e.g. another run's); the
      step, optimizer state and copies start afresh.

  Returns:
    The initial TrainState with step 0.
  """
  static = {"optimizer": optimizer, "target": target, "ema": ema}
  if params is None:
    fn, args = functools.partial(_init, init_fn=init_fn, **static), (rng,)
  else:
    fn = functools.partial(_state_from_params, **static)
    args = (params, jax.random.split(rng)[1])  # The same training rng as from scratch.
  out_shardings = None
  if mesh is not None:
    out_shardings = sharding.state_sharding(jax.eval_shape(fn, *args), mesh, fsdp)
  return jax.jit(fn, out_shardings=out_shardings)(*args)


def make_train_step(
  loss_fn: Callable,
  optimizer: optax.GradientTransformation,
  target_update_period: int | None,
  mesh: Mesh | None = None,
  state_sharding: Any = None,
  ema_decay: float = 0.0,
) -> Callable[[TrainState, Any], tuple[TrainState, dict[str, jnp.ndarray]]]:
  """Builds the jitted train step.

  Args:
    loss_fn: loss_fn(params, target_params, batch, rng) -> (loss, metrics).
    optimizer: the optax transformation the state was initialised with.
    target_update_period: copy params to target_params every this many gradient steps; None
      when the state keeps no target network.
    ema_decay: decay of `ema_params` (the state must have been initialised with ema=True);
      0 keeps none.
    mesh: jit over this mesh (batch split on axis 0); None: plain jit on one device.
    state_sharding: pytree of NamedShardings for the state (e.g. FSDP from
      sharding.state_sharding); default replicated. Only used with a mesh.

  Returns:
    train_step(state, batch) -> (state, metrics); `state` is donated. Metrics are the
    loss's plus `grad_norm` and `update_norm` (scalars), left on the devices.
  """
  if target_update_period is not None and target_update_period < 1:
    raise ValueError(f"target_update_period must be >= 1, got {target_update_period}.")
  if not 0.0 <= ema_decay < 1.0:
    raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}.")

  def train_step(state: TrainState, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (_, metrics), grads = grad_fn(state.params, state.target_params, batch, rng)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    step = state.step + 1
    target_params = state.target_params
    if target_update_period is not None:
      # optax's, not rlax's `periodic_update`: rlax deprecates its own in favour of optax's.
      target_params = optax.periodic_update(params, target_params, step, target_update_period)
    ema_params = state.ema_params
    if ema_decay:
      ema_params = optax.incremental_update(params, ema_params, step_size=1.0 - ema_decay)
    metrics = {
      **metrics,
      "grad_norm": optax.global_norm(grads),
      "update_norm": optax.global_norm(updates),
    }
    return TrainState(params, target_params, opt_state, step, state.rng, ema_params), metrics

  if mesh is None:
    return jax.jit(train_step, donate_argnums=0)
  replicated = sharding.replicated(mesh)
  state_sharding = replicated if state_sharding is None else state_sharding
  return jax.jit(
    train_step,
    in_shardings=(state_sharding, sharding.batch_sharding(mesh)),
    out_shardings=(state_sharding, replicated),
    donate_argnums=0,
  )
