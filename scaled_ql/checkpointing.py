"""Orbax checkpoints of the whole `TrainState` (and a data source's state), with clear errors.

    {workdir}/checkpoints/{step}/default   the TrainState
    {workdir}/checkpoints/{step}/data      the data source's `state()`, when it has one

An offline source needs no data item: its batches are a pure function of (seed, step), so
restoring `state.step` restores where its stream was. A source fed by acting saves its rows.
The workdir may be a bucket (`gs://...`): orbax writes there itself.
"""

import contextlib
import os
import re

import jax
import orbax.checkpoint as ocp

from scaled_ql import runs

CHECKPOINT_SUBDIR = "checkpoints"
_STATE, _DATA = "default", "data"


def checkpoint_dir(workdir: str) -> str:
  """`{workdir}/checkpoints`, absolute (a `gs://` URI is kept as it is)."""
  return os.path.join(runs.absolute(workdir), CHECKPOINT_SUBDIR)


def has_checkpoint(workdir: str) -> bool:
  """Whether the workdir holds a finished checkpoint (without creating anything).

  Finished as orbax sees it: locally a step directory renamed into place, in a bucket (where
  orbax writes in place) one holding its commit marker.
  """
  return latest_step(workdir) is not None


def latest_step(workdir: str) -> int | None:
  """The workdir's latest finished checkpoint's step (see `has_checkpoint`), or None."""
  steps = ocp.utils.checkpoint_steps(checkpoint_dir(workdir))
  return max(steps) if steps else None


class CheckpointMismatchError(ValueError):
  """A checkpoint's parameters do not fit the configured network."""


class CheckpointWriteError(OSError):
  """The storage refused a checkpoint (full disk, quota...); the earlier checkpoints are intact."""

  def __str__(self) -> str:
    return self.strerror


def _os_error(e: Exception) -> tuple[int, str] | None:
  """(errno, reason) when `e` is the storage refusing a write, else None.

  orbax raises its own writes' OSError; tensorstore (which writes the arrays) a ValueError
  whose long message holds the OS error's code, e.g. "RESOURCE_EXHAUSTED: ... [os_error_code=28]".
  """
  if isinstance(e, OSError) and e.errno:
    return e.errno, e.strerror or os.strerror(e.errno)
  found = re.search(r"\[os_error_code='?(\d+)", str(e))
  if isinstance(e, ValueError) and found:
    return int(found.group(1)), os.strerror(int(found.group(1)))
  return None


def _flatten_shapes(tree) -> dict[str, tuple[int, ...]]:
  """Maps 'a/b/c' paths of a (metadata or array) tree to shapes."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {
    "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path): tuple(
      leaf.shape
    )
    for path, leaf in flat
  }


def _as_dict(state) -> dict:
  """Orbax stores NamedTuples as dicts; compare against the same form."""
  return state._asdict() if hasattr(state, "_asdict") else state


class Checkpointer:
  """Saves and restores `TrainState`s under `{workdir}/checkpoints/{step}`.

  Writes are atomic (orbax writes to a temporary directory and renames it; in a bucket, where
  a rename is a copy, it writes in place and marks the step finished with a commit file last),
  so a process killed mid-save leaves the previous checkpoint as the latest one. A write the
  storage refuses (a full disk) raises `CheckpointWriteError` from `save` or `wait`, naming the
  checkpoint that a rerun resumes from.
  """

  def __init__(self, workdir: str, max_to_keep: int = 3):
    self.directory = checkpoint_dir(workdir)
    self._saving = None  # The step of the save in flight.
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
      # Explicit handlers let item_metadata read saved shapes.
      item_handlers={_STATE: ocp.PyTreeCheckpointHandler(), _DATA: ocp.PyTreeCheckpointHandler()},
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, state, data_state: dict | None = None) -> None:
    """Saves `state` (and a data source's non-empty state) at `state.step` (asynchronously)."""
    self.wait()  # The previous save's failure is reported as its own (orbax waits anyway).
    step = int(jax.device_get(state.step))
    items = {_STATE: ocp.args.PyTreeSave(state)}
    if data_state:
      items[_DATA] = ocp.args.PyTreeSave(data_state)
    with self._refused_writes_reported(step):
      self._manager.save(step, args=ocp.args.Composite(**items))
    self._saving = step

  def restore_data(self, step: int) -> dict:
    """The data source's state saved with the checkpoint at `step` ({} if none was saved)."""
    if _DATA not in self._manager.item_metadata(step):
      return {}
    return self._manager.restore(
      step, args=ocp.args.Composite(**{_DATA: ocp.args.PyTreeRestore()})
    )[_DATA]

  def wait(self) -> None:
    """Waits for the save in flight, if any."""
    with self._refused_writes_reported(self._saving):
      self._manager.wait_until_finished()
    self._saving = None

  @contextlib.contextmanager
  def _refused_writes_reported(self, step: int | None):
    """Turns the storage's refusal to write checkpoint `step` into a `CheckpointWriteError`."""
    try:
      yield
    except Exception as e:
      refused = _os_error(e)
      if refused is None:
        raise
      kept = self.latest_step()
      raise CheckpointWriteError(
        refused[0],
        f"The checkpoint at step {step} could not be written to {self.directory}: {refused[1]}. "
        + (
          f"The run stopped; its checkpoint at step {kept} is intact: once this is fixed (e.g. "
          "space freed), run the same command again to resume from it."
          if kept is not None
          else "The run stopped before its first checkpoint: once this is fixed (e.g. space "
          "freed), run the same command again."
        ),
      ) from e

  def restore(self, abstract_state, step: int | None = None, partial: bool = False):
    """Restores a checkpoint into the structure, shapes and shardings of `abstract_state`.

    Args:
      abstract_state: a TrainState, or with `partial` a dict of some of its fields
        (e.g. `{"params": ...}`), of arrays or `jax.ShapeDtypeStruct`s with shardings.
      step: the step to restore; the latest when None.
      partial: restore only the fields in `abstract_state`.

    Returns:
      The restored TrainState.

    Raises:
      FileNotFoundError: no checkpoint (or not that step) in the workdir.
      CheckpointMismatchError: the stored parameters differ from the configured ones;
        the message lists the differing paths.
    """
    steps = self.all_steps()
    if step is None:
      step = self.latest_step()
    if step is None or step not in steps:
      raise FileNotFoundError(
        f"No checkpoint{'' if step is None else f' at step {step}'} in {self.directory} "
        f"(available steps: {steps or 'none'}). Train first with `python -m scaled_ql.pretrain "
        f"--workdir=...` or pick one of the available steps."
      )
    self._check_compatible(abstract_state, step, partial)
    restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_state)
    item = ocp.args.PyTreeRestore(abstract_state, restore_args, partial_restore=partial)
    return self._manager.restore(step, args=ocp.args.Composite(**{_STATE: item}))[_STATE]

  def _check_compatible(self, abstract_state, step: int, partial: bool) -> None:
    stored = _flatten_shapes(self._manager.item_metadata(step)[_STATE].tree)
    wanted = _flatten_shapes(_as_dict(abstract_state))
    wanted_roots = {path.split("/")[0] for path in wanted}
    if partial:
      stored = {path: shape for path, shape in stored.items() if path.split("/")[0] in wanted_roots}
    differences = []
    for path in sorted(set(stored) | set(wanted)):
      if path not in wanted:
        differences.append(f"  {path}: in the checkpoint, not in the configured network")
      elif path not in stored:
        differences.append(f"  {path}: in the configured network, not in the checkpoint")
      elif stored[path] != wanted[path]:
        differences.append(f"  {path}: checkpoint {stored[path]} vs configured {wanted[path]}")
    if differences:
      shown = differences[:20] + (
        [f"  ... and {len(differences) - 20} more"] * (len(differences) > 20)
      )
      raise CheckpointMismatchError(
        f"The checkpoint at step {step} in {self.directory} does not match the configured "
        f"model ({len(differences)} differences):\n" + "\n".join(shown) + "\nUse the gin "
        "config the checkpoint was trained with (its workdir's operative_config.gin) or a new "
        "--workdir."
      )
