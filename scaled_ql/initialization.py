"""Where a run's state comes from: its own checkpoint, else another run (`init_from`), else scratch.

    restore_or_init:  this workdir's latest checkpoint   -> resume (state, step and data)
                      else InitFrom(source=RUN or RUN/checkpoints/STEP)
                                                        -> that run's parameters, carried over
                                                           by the method's `transfer` (shared
                                                           layers copied, heads mapped by game
                                                           name, new games get new heads)
                      else                              -> fresh parameters from the seed

Fine-tuning starts with a fresh optimizer state and step 0; `InitFrom` can also train the
shared layers at a lower learning rate or freeze them (`torso_learning_rate_scale`).
"""

import dataclasses
import functools
import os
import posixpath
import re

import jax
import optax
from absl import logging

from scaled_ql import checkpointing, sharding
from scaled_ql import train_step as train_step_lib
from scaled_ql.methods import base, loading


@dataclasses.dataclass(frozen=True)
class InitFrom:
  """Start a run from another run's parameters (gin: `initialization.InitFrom`).

  Attributes:
    source: a run directory (its latest checkpoint) or one checkpoint, `RUN/checkpoints/STEP`;
      a local path or a bucket URI (`gs://...`).
    params: "params" or "ema_params" of the source; default: those its policy acts with.
    torso_learning_rate_scale: multiplies the updates of the shared (not per-game) parameters:
      1 trains everything alike, 0 freezes the torso (no optimizer state is kept for it).
      Below 1 the method's optimizer runs separately on the two groups, so a global-norm
      clipping (`make_optimizer.max_grad_norm`) clips each group by its own norm.
  """

  source: str
  params: str | None = None
  torso_learning_rate_scale: float = 1.0

  def __post_init__(self):
    if not 0.0 <= self.torso_learning_rate_scale <= 1.0:
      raise ValueError(
        f"InitFrom.torso_learning_rate_scale must be in [0, 1], got "
        f"{self.torso_learning_rate_scale}."
      )
    if self.params not in (None, "params", "ema_params"):
      raise ValueError(f"InitFrom.params must be 'params' or 'ema_params', got {self.params!r}.")

  def run_and_step(self) -> tuple[str, int | None]:
    """(run directory, checkpoint step or None for the latest); a `gs://` source stays a URI."""
    scheme, sep, rest = self.source.partition("://")
    path = scheme + sep + posixpath.normpath(rest) if sep else os.path.normpath(self.source)
    match = re.fullmatch(r"(.*)/" + checkpointing.CHECKPOINT_SUBDIR + r"/(\d+)", path)
    return (match.group(1), int(match.group(2))) if match else (path, None)

  def adapt(self, learner: base.Learner) -> base.Learner:
    """The learner with the shared parameters' updates scaled (or frozen)."""
    scale = self.torso_learning_rate_scale
    if scale == 1.0:
      return learner
    shared = (
      optax.set_to_zero() if scale == 0.0 else optax.chain(learner.optimizer, optax.scale(scale))
    )
    optimizer = optax.multi_transform(
      {"per_game": learner.optimizer, "shared": shared},
      lambda params: jax.tree.map(
        lambda head: "per_game" if head else "shared", learner.per_game(params)
      ),
    )
    return learner._replace(optimizer=optimizer)


def transferred_params(init_from: InitFrom, learner: base.Learner, game_names, rng):
  """Fresh parameters for `game_names` with `init_from`'s source carried over (host arrays)."""
  run, step = init_from.run_and_step()
  source, _, info, step = loading.restore_params(run, step, init_from.params)
  fresh = jax.jit(learner.init)(jax.random.split(rng)[0])  # The same draw as from scratch.
  params = learner.transfer(source, info, fresh)
  new = [g for g in game_names if g not in info["game_names"]]
  logging.info("init_from %s step %d (a %s run): parameters carried over for %s; new games "
               "(fresh heads): %s.", run, step, info.get("method"),
               [g for g in game_names if g in info["game_names"]], new)  # fmt: skip
  return params


def restore_or_init(
  checkpointer: checkpointing.Checkpointer,
  learner: base.Learner,
  game_names,
  seed: int,
  mesh,
  fsdp: bool = False,
  ema: bool = False,
  init_from: InitFrom | None = None,
):
  """The run's starting TrainState: resumed, carried over from another run, or fresh.

  Args:
    checkpointer: this run's checkpoints.
    learner: the method built for `game_names` (with `init_from.adapt` applied).
    game_names: the run's games.
    seed: the run's seed.
    mesh: the device mesh.
    fsdp, ema: as in `train_step.init_train_state`.
    init_from: another run to start from when this one has no checkpoint.

  Returns:
    (state, data_state): the TrainState and the data source's saved state ({} unless resumed
    from a checkpoint that holds one).
  """
  rng = jax.random.PRNGKey(seed)
  static = dict(mesh=mesh, fsdp=fsdp, target=learner.target_update_period is not None, ema=ema)
  step = checkpointer.latest_step()
  if step is not None:
    init = functools.partial(train_step_lib.init_train_state, rng, learner.init, learner.optimizer)
    shapes = jax.eval_shape(lambda: init(**static))
    state = checkpointer.restore(sharding.replicated_shapes(shapes, mesh, fsdp), step)
    logging.info("Resumed from the checkpoint at step %d.", step)
    return state, checkpointer.restore_data(step)
  params = None
  if init_from is not None:
    params = transferred_params(init_from, learner, game_names, rng)
  state = train_step_lib.init_train_state(
    rng, learner.init, learner.optimizer, params=params, **static
  )
  return state, {}
