"""The one training loop, shared by pretraining, fine-tuning and the baselines.

`train(workdir)` reads everything else from gin. The same command in the same
workdir resumes from the last checkpoint: batches are a pure function of
(seed, step), so the data stream continues exactly where it stopped.
"""

import dataclasses
import functools
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import gin
import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from absl import logging

from scaled_ql import checkpointing, games, losses, metrics, networks, optimizers, sharding, types
from scaled_ql import train_step as train_step_lib

RUN_INFO_FILE = "run_info.json"
OPERATIVE_CONFIG_FILE = "operative_config.gin"


class Learner(NamedTuple):
  """What the configuration builds: everything but the data and the state."""

  network: Any  # hk.Transformed: apply(params, obs, game_id) -> NetworkOutput.
  loss_fn: Callable
  optimizer: Any  # optax.GradientTransformation.
  mesh: jax.sharding.Mesh


def build_learner(
  game_names: Sequence[str],
  network_config: networks.NetworkConfig,
  loss_config: losses.LossConfig,
  optimizer_fn: Callable = optimizers.make_optimizer,
) -> Learner:
  """Builds the network, loss, optimizer and device mesh for `game_names`."""
  net_support = (network_config.num_atoms, network_config.v_min, network_config.v_max)
  loss_support = (loss_config.num_atoms, loss_config.v_min, loss_config.v_max)
  if (loss_config.td == "c51") != network_config.distributional or (
    loss_config.td == "c51" and net_support != loss_support
  ):
    raise ValueError(
      f"LossConfig(td={loss_config.td!r}, support {loss_support}) does not fit "
      f"NetworkConfig(distributional={network_config.distributional}, support {net_support}): "
      "C51 needs a distributional network with the same (num_atoms, v_min, v_max); MSE a "
      "scalar one. Bind both from the same gin macros, as gin/base.gin does."
    )
  num_actions = [games.num_actions(game) for game in game_names]
  network = networks.make_network(network_config, num_actions)
  loss_fn = losses.make_loss(loss_config, network.apply, num_games=len(game_names))
  return Learner(network, loss_fn, optimizer_fn(), sharding.make_mesh())


def abstract_train_state(
  learner: Learner, sample_batch, seed: int, fsdp: bool = False, ema: bool = False
):
  """The TrainState's shapes and mesh shardings, without computing it (to restore into)."""
  shapes = jax.eval_shape(
    functools.partial(
      train_step_lib.init_train_state,
      network=learner.network,
      optimizer=learner.optimizer,
      sample_batch=sample_batch,
      ema=ema,
    ),
    jax.random.PRNGKey(seed),
  )
  return sharding.replicated_shapes(shapes, learner.mesh, fsdp)


def make_greedy_policy(network, params) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
  """Greedy policy over the masked Q-values: (obs uint8[N,84,84,4], game_id int32[N]) -> int32[N]."""

  @jax.jit
  def act(params, obs, game_id):
    return jnp.argmax(network.apply(params, obs, game_id).q_values, axis=-1).astype(jnp.int32)

  return lambda obs, game_id: np.asarray(act(params, obs, game_id))


@gin.configurable(denylist=["workdir"])
def train(
  workdir: str,
  *,
  game_names: Sequence[str] = gin.REQUIRED,
  dataset_fn: Callable = gin.REQUIRED,
  network_config: networks.NetworkConfig = gin.REQUIRED,
  loss_config: losses.LossConfig = gin.REQUIRED,
  optimizer_fn: Callable = gin.REQUIRED,
  method: str = "scaled_ql",
  num_grad_steps: int = 1_000_000,
  global_batch_size: int = 512,
  target_update_period: int = 2_000,
  seed: int = 0,
  log_every_steps: int = 100,
  checkpoint_every_steps: int = 10_000,
  keep_checkpoints: int = 3,
  eval_every_steps: int = 0,
  eval_fn: Callable | None = None,
  fsdp: bool = False,
  ema_decay: float = 0.0,
  data_quality: str | None = None,
  phase: str = "pretrain",
  init: str = "scratch",
) -> dict[str, float]:
  """Trains a multi-game Q-network (or a BC policy) on offline data.

  Args:
    workdir: run directory (checkpoints, TensorBoard, metrics.jsonl, run_info.json).
    game_names: training games; the index of a game is its `game_id`.
    dataset_fn: builds the batch source: called with `game_names`, `local_batch_size`,
      `seed`, `process_index`, `process_count`; must have `batch(step)` and
      `iterate(start_step)` yielding host-local `Batch`es.
    network_config: the network.
    loss_config: the loss (C51/MSE TD, CQL, BC weights).
    optimizer_fn: builds the optax optimizer; bind `@optimizers.make_optimizer` (a gin
      reference, so that its own bindings apply).
    method: a label for reports ("scaled_ql", "bc", ...).
    num_grad_steps: total gradient steps of the run (including resumed ones).
    global_batch_size: transitions per step over all hosts.
    target_update_period: gradient steps between hard target-network updates.
    seed: seeds parameters, per-step randomness and the data order.
    log_every_steps: metrics are fetched to the host only this often.
    checkpoint_every_steps: gradient steps between checkpoints.
    keep_checkpoints: how many checkpoints to keep.
    eval_every_steps: run `eval_fn` this often (0: only at the end if `eval_fn` is set).
    eval_fn: `(policy_fn, game_names, step, workdir) -> {name: float}` evaluation hook.
    fsdp: split large parameters and their optimizer moments over the devices (ZeRO-3
      style) instead of replicating them, for models whose state does not fit on one device.
    ema_decay: keep an exponential moving average of the parameters with this decay and
      evaluate it instead of the raw parameters (0: evaluate the raw parameters).
    data_quality, phase, init: labels recorded in run_info.json for reports
      ("near_optimal" / "low_quality"; "pretrain" / "offline_finetune" / "online_finetune";
      "scratch" / "pretrained").

  Returns:
    The last logged metrics (host floats).
  """
  # -- Validate before any compute.
  games.validate_games(game_names)
  _check_local_path(workdir)
  if phase != "pretrain" or init != "scratch":
    raise ValueError(
      f"train.phase={phase!r}, train.init={init!r}: only 'pretrain' from 'scratch' is "
      "implemented; fine-tuning from a pretrained checkpoint is not yet."
    )
  local_batch_size, remainder = divmod(global_batch_size, jax.process_count())
  if remainder or local_batch_size % jax.local_device_count():
    raise ValueError(
      f"global_batch_size={global_batch_size} must split evenly over {jax.process_count()} "
      f"process(es) and then over each process's {jax.local_device_count()} device(s)."
    )
  run_info = dict(
    method=method,
    phase=phase,
    init=init,
    data_quality=data_quality,
    game_names=list(game_names),
    seed=seed,
    global_batch_size=global_batch_size,
    num_grad_steps=num_grad_steps,
    ema_decay=ema_decay,
    network_config=dataclasses.asdict(network_config),
    loss_config=dataclasses.asdict(loss_config),
  )
  if checkpointing.has_checkpoint(workdir):
    _check_same_run(workdir, run_info)
  dataset = dataset_fn(
    game_names=game_names,
    local_batch_size=local_batch_size,
    seed=seed,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )

  # -- Build the learner and restore or initialise the state.
  learner = build_learner(game_names, network_config, loss_config, optimizer_fn)
  checkpointer = checkpointing.Checkpointer(workdir, max_to_keep=keep_checkpoints)
  sample_batch = types.zeros_batch(local_batch_size)  # Shapes only.
  ema = ema_decay > 0
  abstract_state = abstract_train_state(learner, sample_batch, seed, fsdp, ema)
  if checkpointer.latest_step() is not None:
    state = checkpointer.restore(abstract_state)
    logging.info("Resumed from the checkpoint at step %d.", int(state.step))
  else:
    state = train_step_lib.init_train_state(
      jax.random.PRNGKey(seed), learner.network, learner.optimizer, sample_batch, learner.mesh,
      fsdp, ema,
    )  # fmt: skip
  start_step = int(state.step)
  if start_step >= num_grad_steps:
    logging.info("%s already holds the finished run (step %d); bind a larger "
                 "train.num_grad_steps to train it further.", workdir, start_step)  # fmt: skip
  num_params = int(sum(np.prod(p.shape) for p in jax.tree.leaves(state.params)))
  _write_run_info(workdir, dict(run_info, num_params=num_params))
  logging.info("Data: %s", dataset.describe())

  step_fn = train_step_lib.make_train_step(
    learner.network,
    learner.loss_fn,
    learner.optimizer,
    target_update_period,
    mesh=learner.mesh,
    state_sharding=jax.tree.map(lambda leaf: leaf.sharding, abstract_state),
    ema_decay=ema_decay,
  )
  writer = metrics.MetricWriter(workdir, start_step, enabled=jax.process_index() == 0)
  if eval_fn and jax.process_count() > 1:
    logging.warning("Periodic evaluation is single-process only; skipped. Evaluate checkpoints "
                    "with `python -m scaled_ql.evaluate --workdir=...`.")  # fmt: skip
    eval_fn = None
  progress = tqdm.tqdm(
    total=num_grad_steps,
    initial=start_step,
    unit="step",
    dynamic_ncols=True,
    disable=jax.process_index() != 0,
  )

  def run_eval(step: int) -> dict[str, float]:
    policy = make_greedy_policy(learner.network, evaluated_params(state))
    eval_scalars = eval_fn(policy, game_names, step, workdir)
    writer.write(step, eval_scalars)
    writer.flush()
    return eval_scalars

  # -- The loop: the step is the only per-step work; metrics are fetched every log window
  # (and before every checkpoint); the window's other steps' are fetched only to name the
  # first non-finite step.
  last_logged, window_start, window_time = {}, start_step, time.time()
  step, window = start_step, []
  batches = dataset.iterate(start_step)
  try:
    while step < num_grad_steps:
      state, step_metrics = step_fn(state, sharding.put_batch(next(batches), learner.mesh))
      step += 1
      window.append(step_metrics)
      progress.update(1)
      boundary = step == num_grad_steps or step % log_every_steps == 0
      if boundary or step % checkpoint_every_steps == 0:
        flat = metrics.flatten(jax.device_get(step_metrics), game_names)
        if not metrics.all_finite(flat):
          metrics.raise_first_nonfinite(jax.device_get(window), game_names, step - len(window) + 1)
        window = []
        steps_per_s = (step - window_start) / max(time.time() - window_time, 1e-9)
        flat.update(
          steps_per_s=steps_per_s,
          examples_per_s=steps_per_s * global_batch_size,
          eta_s=(num_grad_steps - step) / steps_per_s,
        )
        writer.write(step, flat)
        writer.flush()
        progress.set_postfix(loss=f"{flat['loss']:.3f}", q=f"{flat.get('q_mean', 0.0):.2f}")
        last_logged, window_start, window_time = flat, step, time.time()
      if step % checkpoint_every_steps == 0 or step == num_grad_steps:
        checkpointer.save(state)
      if eval_fn and eval_every_steps and step % eval_every_steps == 0 and step < num_grad_steps:
        last_logged = {**last_logged, **run_eval(step)}
        window_start, window_time = step, time.time()  # Evaluation is not training throughput.
    # The final evaluation also runs when a killed run had checkpointed but not evaluated.
    if eval_fn and step not in metrics.steps_with(workdir, "eval/"):
      last_logged = {**last_logged, **run_eval(step)}
  finally:
    progress.close()
    batches.close()
    dataset.close()
    checkpointer.wait()
    writer.close()
  return last_logged


def _check_local_path(workdir: str) -> None:
  """The workdir is written with local file I/O: a URI would silently become a local folder."""
  if "://" in workdir:
    raise ValueError(
      f"--workdir={workdir}: URIs are not supported; use a local path or a mounted shared "
      "filesystem (e.g. gcsfuse or NFS, the same path on every host)."
    )
  try:  # A real write: os.access says yes to root even on a read-only filesystem.
    os.makedirs(workdir, exist_ok=True)
    with tempfile.TemporaryFile(dir=workdir):
      pass
  except OSError as e:
    raise PermissionError(
      f"The workdir {workdir} is not writable ({e.strerror}); pass another --workdir."
    ) from e


# Fields that must not change when a run resumes (num_grad_steps and evaluation may).
_IDENTITY_FIELDS = ("game_names", "seed", "global_batch_size", "network_config", "loss_config",
                    "ema_decay", "method")  # fmt: skip


def _check_same_run(workdir: str, run_info: dict) -> None:
  """Refuses to resume a checkpoint under a different game list, seed, batch or model."""
  path = os.path.join(workdir, RUN_INFO_FILE)
  if not os.path.exists(path):
    return
  with open(path) as f:
    stored = json.load(f)
  run_info = json.loads(json.dumps(run_info))  # Compare in the stored form (tuples -> lists).
  changed = [
    f"  {key}: {stored[key]!r} -> {run_info[key]!r}"
    for key in _IDENTITY_FIELDS
    if key in stored and stored[key] != run_info[key]
  ]
  if changed:
    raise ValueError(
      f"{workdir} holds a run with a different configuration; resuming it would not continue "
      "that run:\n" + "\n".join(changed) + "\nUse a new --workdir, or restore these values."
    )


def evaluated_params(state):
  """The parameters a policy acts with: the moving average when kept, else the raw ones."""
  return state.params if state.ema_params is None else state.ema_params


def _write_run_info(workdir: str, info: dict) -> None:
  """Records what the run is (and the gin config it used), for `load_policy` and reports."""
  if jax.process_index() != 0:
    return
  info = json.dumps({k: v for k, v in info.items() if v is not None}, indent=2)
  for name, text in ((OPERATIVE_CONFIG_FILE, gin.operative_config_str()), (RUN_INFO_FILE, info)):
    metrics.write_atomically(os.path.join(workdir, name), text)


def read_run_info(workdir: str) -> dict:
  """Reads a run's `run_info.json`, with a clear error when the run does not exist."""
  path = os.path.join(workdir, RUN_INFO_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"{path} does not exist: {workdir} is not a training run directory "
      "(run `python -m scaled_ql.pretrain --workdir=...` first)."
    )
  with open(path) as f:
    return json.load(f)


def load_policy(workdir: str, step: int | None = None):
  """Restores a run's greedy policy from its checkpoint.

  Args:
    workdir: a run directory written by `train`.
    step: the checkpoint step; the latest when None.

  Returns:
    (policy_fn, game_names, step), where policy_fn maps (obs uint8[N,84,84,4],
    game_id int32[N]) to greedy actions int32[N].
  """
  info = read_run_info(workdir)
  network_config = networks.NetworkConfig(**info["network_config"])
  loss_config = losses.LossConfig(**info["loss_config"])
  learner = build_learner(info["game_names"], network_config, loss_config)
  ema = info.get("ema_decay", 0.0) > 0
  abstract = abstract_train_state(learner, types.zeros_batch(batch_size=1), info["seed"], ema=ema)
  name = "ema_params" if ema else "params"
  checkpointer = checkpointing.Checkpointer(workdir)
  step = checkpointer.latest_step() if step is None else step
  restored = checkpointer.restore({name: getattr(abstract, name)}, step, partial=True)
  return make_greedy_policy(learner.network, restored[name]), info["game_names"], step
