"""The one training loop, shared by pretraining, fine-tuning and every method.

`train(workdir)` reads everything else from gin. It knows a method (`methods.Learner`: init,
loss, optimizer, policy), a data source (`data.source.DataSource`) and a `TrainState`, and
nothing of Q-learning. The same command in the same workdir resumes from the last checkpoint;
an offline source's batches are a pure function of (seed, step), a source fed by acting is
restored from the checkpoint, so the data stream continues exactly where it stopped.
"""

import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence

import gin
import jax
import numpy as np
import tqdm
from absl import logging

from scaled_ql import (
  checkpointing,
  compute,
  games,
  initialization,
  metrics,
  multihost,
  runs,
  sharding,
  workdir_lock,
)
from scaled_ql import train_step as train_step_lib
from scaled_ql.data import source as data_source
from scaled_ql.methods import base, loading

# Fields that must not change when a run resumes (num_grad_steps and evaluation may).
_IDENTITY_FIELDS = ("game_names", "seed", "global_batch_size", "method", "method_class",
                    "method_config", "ema_decay", "init_from")  # fmt: skip


@gin.configurable(denylist=["workdir"])
def train(
  workdir: str,
  *,
  game_names: Sequence[str] = gin.REQUIRED,
  dataset_fn: Callable = gin.REQUIRED,
  method: base.Method = gin.REQUIRED,
  num_grad_steps: int = 1_000_000,
  global_batch_size: int = 512,
  seed: int = 0,
  log_every_steps: int = 100,
  checkpoint_every_steps: int = 10_000,
  keep_checkpoints: int = 3,
  eval_every_steps: int = 0,
  eval_fn: Callable | None = None,
  fsdp: bool = False,
  ema_decay: float = 0.0,
  init_from: initialization.InitFrom | None = None,
  data_quality: str | None = None,
  phase: str = "pretrain",
  data_shards: int | None = None,
  precision: str = "float32",
  remat: bool = False,
) -> dict[str, float]:
  """Trains `method` on the games' data.

  Args:
    workdir: run directory (checkpoints, TensorBoard, metrics.jsonl, run_info.json).
    game_names: training games; the index of a game is its `game_id`.
    dataset_fn: builds the `DataSource`: called with `game_names`, `local_batch_size`,
      `seed`, `process_index`, `process_count`.
    method: what is trained (e.g. `@methods.ScaledQL()`, `@methods.BC()`).
    num_grad_steps: total gradient steps of the run (including resumed ones); 0 checkpoints
      and evaluates the initial parameters (e.g. those of `init_from`).
    global_batch_size: examples per step over all hosts.
    seed: seeds parameters, per-step randomness and the data order.
    log_every_steps: metrics are fetched to the host only this often.
    checkpoint_every_steps: gradient steps between checkpoints.
    keep_checkpoints: how many checkpoints to keep.
    eval_every_steps: run `eval_fn` this often (0: only at the end if `eval_fn` is set).
    eval_fn: `(policy, game_names, step, workdir) -> {name: float}` evaluation hook.
    fsdp: split large parameters and their optimizer moments over the devices (ZeRO-3
      style) instead of replicating them, for models whose state does not fit on one device.
    ema_decay: keep an exponential moving average of the parameters with this decay and
      evaluate it instead of the raw parameters (0: evaluate the raw parameters).
    init_from: start from another run's parameters when this workdir has no checkpoint.
    data_quality: label for reports ("near_optimal" / "low_quality"); by default the data
      source's own.
    phase: label for reports ("pretrain" / "offline_finetune" / "online_finetune").
    data_shards: split the data and each global batch into this many disjoint shards, each
      process holding as many consecutive ones (default: one per process). The batches depend
      on this number only, not on the number of processes: fix it (e.g. 64) to resume a run on
      another number of hosts with the same data stream. Each shard is its own `dataset_fn`
      source, with its own memory (a ReplayDataset's pool_rows is per shard).
    precision: "float32", "bfloat16" (the networks' bulk computes in bfloat16; parameters,
      optimizer state and losses stay float32) or "auto" (bfloat16 on TPU and GPU, float32 on
      CPU); see `scaled_ql.compute`. A run may resume in another precision (with a warning).
    remat: recompute each residual / transformer block in the backward pass (less activation
      memory, about a third more FLOPs; `python -m scaled_ql.plan` says when it is needed).

  Returns:
    The last logged metrics (host floats).
  """
  # -- Validate and build before any compute.
  compute_config = compute.resolve(precision, remat)
  games.validate_games(game_names)
  if num_grad_steps < 0:
    raise ValueError(f"num_grad_steps must be >= 0 (0: evaluate the initial parameters), got "
                     f"{num_grad_steps}.")  # fmt: skip
  runs.check_writable(workdir)
  num_shards = data_shards or jax.process_count()
  local_batch_size, remainder = divmod(global_batch_size, jax.process_count())
  if remainder or local_batch_size % jax.local_device_count():
    raise ValueError(
      f"global_batch_size={global_batch_size} must split evenly over {jax.process_count()} "
      f"process(es) and then over each process's {jax.local_device_count()} device(s)."
    )
  if num_shards % jax.process_count() or global_batch_size % num_shards:
    raise ValueError(
      f"data_shards={num_shards} must be a multiple of the {jax.process_count()} process(es) "
      f"and divide global_batch_size={global_batch_size}."
    )
  run_info = dict(
    **loading.method_record(method),
    phase=phase,
    init="pretrained" if init_from else "scratch",
    init_from=init_from and dataclasses.asdict(init_from),
    game_names=list(game_names),
    seed=seed,
    global_batch_size=global_batch_size,
    num_grad_steps=num_grad_steps,
    data_shards=num_shards,
    num_processes=jax.process_count(),
    ema_decay=ema_decay,
    precision=precision,
    compute_dtype=compute_config.dtype.name,
    remat=compute_config.remat,
  )
  if checkpointing.has_checkpoint(workdir):
    runs.check_same_run(workdir, run_info, _IDENTITY_FIELDS)
    stored = runs.read_run_info(workdir) if runs.is_run(workdir) else {}
    stored_shards = stored.get("data_shards", num_shards)
    stored_dtype = stored.get("compute_dtype", "float32")  # Runs before the knob: float32.
    if stored_dtype != run_info["compute_dtype"]:
      logging.warning("The run computed in %s and continues in %s (train.precision = %r): the "
                      "same parameters, other numerics.", stored_dtype, run_info["compute_dtype"],
                      precision)  # fmt: skip
    if stored_shards != num_shards:
      logging.warning("The run's data was split into %d shards, now %d: its batches from here on "
                      "differ from an uninterrupted run's (bind train.data_shards = %d to keep "
                      "them).", stored_shards, num_shards, stored_shards)  # fmt: skip
  learner = method.build(game_names, compute_config)
  if init_from is not None:
    learner = init_from.adapt(learner)
  # Whatever stops the run (an error included), what was opened is closed, in reverse order.
  with contextlib.ExitStack() as cleanup:
    _hold_workdir(cleanup, workdir)
    dataset = _make_dataset(dataset_fn, game_names, global_batch_size, seed, num_shards)
    cleanup.callback(dataset.close)

    # -- Restore or initialise the state.
    mesh = sharding.make_mesh()
    checkpointer = checkpointing.Checkpointer(workdir, max_to_keep=keep_checkpoints)
    cleanup.callback(checkpointer.wait)
    state, data_state = initialization.restore_or_init(
      checkpointer, learner, game_names, seed, mesh, fsdp=fsdp, ema=ema_decay > 0,
      init_from=init_from,
    )  # fmt: skip
    if num_shards > 1 and (data_state or dataset.state()):
      raise ValueError(
        f"{type(dataset).__name__} keeps state (rows gathered by acting), which is checkpointed "
        "for one data shard only; run it with one process and train.data_shards = 1."
      )
    dataset.restore(data_state)
    start_step = int(state.step)
    resumed = checkpointer.latest_step() is not None
    if resumed and start_step >= num_grad_steps:
      logging.info("%s already holds the finished run (step %d); bind a larger "
                   "train.num_grad_steps to train it further.", workdir, start_step)  # fmt: skip

    def current_policy():
      """A policy on the current parameters (for evaluation, and a source that acts); valid until
      the next step (the step donates the state), so a source asks for it anew before each batch.
      It acts on this process's devices alone (collective when the parameters are split)."""
      return learner.make_policy(multihost.host_local(evaluated_params(state)))

    # The first batch comes before the run's records: data that cannot make one (no valid
    # transition, batches the method cannot take) stops the run before run_info.json,
    # metrics or a checkpoint is written.
    logging.info("Data: %s", dataset.describe())
    first_batch = None
    if start_step < num_grad_steps:
      batches = dataset.iterate(start_step, current_policy)
      cleanup.callback(batches.close)
      first_batch = next(batches)
      _check_batch(first_batch, learner.example_batch(local_batch_size))
      if learner.check_batch is not None:
        learner.check_batch(first_batch)
    num_params = int(sum(np.prod(p.shape) for p in jax.tree.leaves(state.params)))
    if jax.process_index() == 0:
      run_info.update(num_params=num_params, data_quality=data_quality or dataset.data_quality)
      runs.write_run_info(workdir, run_info, gin.operative_config_str())

    if num_grad_steps == 0 and not resumed:  # A run of its initial parameters (e.g. init_from)
      checkpointer.save(state, dataset.state())
    step_fn = train_step_lib.make_train_step(
      learner.loss_fn,
      learner.optimizer,
      learner.target_update_period,
      mesh=mesh,
      state_sharding=jax.tree.map(lambda leaf: leaf.sharding, state),
      ema_decay=ema_decay,
    )
    writer = metrics.MetricWriter(workdir, start_step, enabled=jax.process_index() == 0)
    cleanup.callback(writer.close)
    progress = tqdm.tqdm(
      total=num_grad_steps,
      initial=start_step,
      unit="step",
      dynamic_ncols=True,
      disable=jax.process_index() != 0,
    )
    cleanup.callback(progress.close)
    preemption = multihost.PreemptionNotice()
    cleanup.callback(preemption.close)

    def run_eval(step: int) -> dict[str, float]:
      eval_scalars = eval_fn(current_policy(), game_names, step, workdir)
      writer.write(step, eval_scalars)
      writer.flush()
      return eval_scalars

    # -- The loop: the step is the only per-step work; metrics are fetched every log window
    # (and before every checkpoint); the window's other steps' are fetched only to name the
    # first non-finite step.
    last_logged, window_start, window_time = {}, start_step, time.time()
    if start_step >= num_grad_steps:  # A finished run: what it logged last.
      for row in runs.read_metrics(workdir):
        last_logged.update({k: v for k, v in row.items() if k != "step"})
    step, window = start_step, []
    if eval_fn and eval_every_steps and 0 < step < num_grad_steps and step % eval_every_steps == 0:
      if not _evaluated(workdir, step):  # The run was killed while evaluating this checkpoint.
        last_logged = {**last_logged, **run_eval(step)}
    while step < num_grad_steps:
      batch = first_batch if step == start_step else next(batches)
      state, step_metrics = step_fn(state, sharding.put_batch(batch, mesh))
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
          dataset.metrics(),
          steps_per_s=steps_per_s,
          examples_per_s=steps_per_s * global_batch_size,
          eta_s=(num_grad_steps - step) / steps_per_s,
        )
        writer.write(step, flat)
        writer.flush()
        progress.set_postfix(loss=f"{flat['loss']:.3f}")
        last_logged, window_start, window_time = flat, step, time.time()
      preempted = preemption.reached(step)
      if step % checkpoint_every_steps == 0 or step == num_grad_steps or preempted:
        checkpointer.save(state, dataset.state())
      if preempted and step < num_grad_steps:
        checkpointer.wait()
        raise multihost.Preempted(
          f"SIGTERM: checkpointed step {step} of {num_grad_steps}; the same command resumes the run."
        )
      if eval_fn and eval_every_steps and step % eval_every_steps == 0 and step < num_grad_steps:
        last_logged = {**last_logged, **run_eval(step)}
        window_start, window_time = step, time.time()  # Evaluation is not training throughput.
    # The final evaluation also runs when a killed run had checkpointed but not evaluated.
    if eval_fn and not _evaluated(workdir, step):
      last_logged = {**last_logged, **run_eval(step)}
    checkpointer.wait()
    multihost.barrier("end of training")  # No process leaves while another still saves.
    return last_logged


def _make_dataset(dataset_fn, game_names, global_batch_size: int, seed: int, num_shards: int):
  """This process's data shards as one source: shards p*k .. p*k+k-1 of `num_shards` for process
  p (k = num_shards / process_count), each making global_batch_size / num_shards examples."""
  per_process = num_shards // jax.process_count()
  first = jax.process_index() * per_process
  sources = []
  try:
    for shard in range(first, first + per_process):
      sources.append(
        dataset_fn(
          game_names=game_names,
          local_batch_size=global_batch_size // num_shards,
          seed=seed,
          process_index=shard,
          process_count=num_shards,
        )
      )
  except BaseException:
    for source in sources:
      source.close()
    raise
  return sources[0] if per_process == 1 else data_source.Concatenated(sources)


def _hold_workdir(cleanup: contextlib.ExitStack, workdir: str) -> None:
  """One trainer per workdir: process 0 takes its lock until `cleanup` closes; when another run
  holds it (a requeued job whose first copy still runs), every process stops with its holder."""
  refusal = None
  if jax.process_index() == 0:
    try:
      cleanup.enter_context(workdir_lock.hold(workdir))
    except workdir_lock.WorkdirInUseError as e:
      refusal = str(e)
  refusal = multihost.allgather_json(refusal)[0]
  if refusal:
    raise workdir_lock.WorkdirInUseError(refusal)


def _evaluated(workdir: str, step: int) -> bool:
  """Whether the run's metrics hold an evaluation of `step`, as process 0 reads them (the others
  follow its answer: only process 0 writes the file)."""
  first = jax.process_index() == 0
  return multihost.allgather_json(first and step in runs.steps_with(workdir, "eval/"))[0]


def evaluated_params(state):
  """The parameters a policy acts with: the moving average when kept, else the raw ones."""
  return state.params if state.ema_params is None else state.ema_params


def _check_batch(batch, example) -> None:
  """The data source's batches must have the structure, shapes and dtypes the method expects."""
  got = jax.tree.map(lambda x: (x.shape, str(x.dtype)), batch)
  want = jax.tree.map(lambda x: (x.shape, str(x.dtype)), example)
  if got != want:
    raise ValueError(
      f"The data source's batches do not fit the method: got {got}, expected {want}. Bind a "
      "train.dataset_fn that makes the method's batches."
    )
