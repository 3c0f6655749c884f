"""Command-line plumbing shared by the entry points: flags, multi-host start-up, errors.

Every entry point takes `--workdir`, `--gin_file` (repeatable) and `--gin_bindings`
(repeatable); everything else is a gin binding (`scaled_ql.configurables` parses them).
A user's mistake is reported in one line (`run_main`), never as a traceback.
"""

import errno
import gc
import logging as std_logging
import os
import signal
import sys
import warnings
from collections.abc import Callable

import jax
from absl import flags, logging

from scaled_ql import multihost

flags.DEFINE_string(
  "workdir", None, "Run directory: checkpoints, logs, results. Resumes if it exists."
)
flags.DEFINE_multi_string("gin_file", [], "gin files, relative to the cwd or to the repo's gin/.")
flags.DEFINE_multi_string("gin_bindings", [], 'gin bindings, e.g. "train.num_grad_steps = 10".')
flags.DEFINE_bool(
  "traceback",
  False,
  "Debugging: show the traceback of a user's error (bad flag, file, data or configuration; "
  "workdir in use; full disk) instead of its one-line `error: ...` (or SCALED_QL_TRACEBACK=1).",
)
flags.DEFINE_bool(
  "distributed",
  False,
  "Multi-host: call jax.distributed.initialize() (TPU pods "
  "find their hosts; elsewhere pass the three flags below).",
)
flags.DEFINE_string("coordinator_address", None, "Multi-host: process 0's host:port.")
flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.")
flags.DEFINE_integer(
  "heartbeat_timeout_s",
  100,
  "Multi-host: a process that has not been heard from for this long is taken for dead, and "
  "every other process stops with an error naming it (instead of waiting for it forever).",
)


class UserError(Exception):
  """A mistake in the command line or configuration: reported in one line, no traceback."""


def initialize_distributed() -> None:
  """Joins a multi-host JAX program when --distributed is given (before any JAX work)."""
  f = flags.FLAGS
  if not f.distributed:
    return
  if f.coordinator_address:
    # Explicit addresses mean CPU processes (tests, a workstation): they talk over gloo.
    # (Asking for the backend here would initialise it too early.)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
    f.coordinator_address,
    f.num_processes,
    f.process_id,
    heartbeat_timeout_seconds=f.heartbeat_timeout_s,
  )
  logging.info(
    "Process %d of %d, %d local / %d global devices.",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )


def gin_files_and_bindings(required: bool = True) -> tuple[list[str], list[str]]:
  """The --gin_file and --gin_bindings values; with `required`, at least one file."""
  f = flags.FLAGS
  if required and not f.gin_file:
    raise UserError(
      "give at least one --gin_file (e.g. local.gin, debug.gin, pretrain_near_optimal.gin)"
    )
  return list(f.gin_file), list(f.gin_bindings)


def require_workdir() -> str:
  if not flags.FLAGS.workdir:
    raise UserError(
      "--workdir is required: the run directory (created if missing, resumed if it holds a run)."
    )
  return flags.FLAGS.workdir


# Libraries whose INFO lines are noise on the console: orbax (about 30 per checkpoint) and
# JAX's backend probing ("Unable to initialize backend 'tpu'" on every CPU run).
_QUIET_PATHS = ("/orbax/", "/jax/_src/xla_bridge.py")
# A full disk, a quota, a read-only or unwritable filesystem: the machine's state, not a bug.
_STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def _quiet_libraries(keep_tracebacks: bool) -> None:
  """Drops the libraries' INFO lines and, unless `keep_tracebacks`, the tracebacks they print
  when a checkpoint write fails: each of orbax's threads logs the failure with its traceback,
  asyncio retells each failed write task's, tensorstore's callbacks find orbax's event loop
  closed. The error that stops the run is reported once, by `run_main`."""

  def keep(record: std_logging.LogRecord) -> bool:
    if record.exc_info and not keep_tracebacks:
      if "/asyncio/" in record.pathname and "exception was never retrieved" in str(record.msg):
        return False
      if "/orbax/" in record.pathname:
        record.exc_info, record.exc_text = None, None
    return record.levelno >= std_logging.WARNING or not any(
      path in record.pathname for path in _QUIET_PATHS
    )

  logging.get_absl_handler().addFilter(keep)
  if not keep_tracebacks:
    sys.unraisablehook = _without_closed_loop_callbacks(sys.unraisablehook)


def _without_closed_loop_callbacks(unraisablehook):
  """`unraisablehook`, silent for tensorstore's completion callbacks that find orbax's event loop
  closed (after a failed checkpoint write, each write still in flight ends that way)."""

  def hook(unraisable) -> None:
    traceback = unraisable.exc_traceback
    called_from = traceback and traceback.tb_frame.f_code.co_name  # The outermost frame.
    closed = isinstance(unraisable.exc_value, RuntimeError) and (
      str(unraisable.exc_value) == "Event loop is closed"
    )
    if not (closed and called_from == "call_soon_threadsafe"):
      unraisablehook(unraisable)

  return hook


def run_main(main: Callable[[], None]) -> None:
  """Runs `main()`, reporting user mistakes and divergence as `error: ...` and exit code 2.

  A user's mistake is a bad flag, file, dataset or configuration, a workdir in use by another
  run, a full disk (`_is_user_error`): one line, without a traceback, before any compute where
  it can be found before. Anything else is a bug and keeps its traceback. For the traceback of
  a user's mistake too, pass `--traceback` or set SCALED_QL_TRACEBACK=1.
  """
  show_traceback = bool(os.environ.get("SCALED_QL_TRACEBACK")) or flags.FLAGS["traceback"].value
  _quiet_libraries(keep_tracebacks=show_traceback)
  try:
    main()
  except multihost.Preempted as e:
    logging.flush()
    print(f"stopped: {str(e).splitlines()[0]}", file=sys.stderr)
    sys.exit(128 + signal.SIGTERM)  # What schedulers expect of a job stopped by SIGTERM.
  except Exception as e:  # Re-raised below unless it is the user's mistake.
    if show_traceback or not _is_user_error(e):
      raise
    logging.flush()
    # gin appends "In call to configurable ..." lines: noise for a user's mistake.
    lines = [line for line in str(e).splitlines() if "In call to configurable" not in line]
    # What a failed checkpoint write left pending (orbax's write tasks) is collected now and
    # quietly, before the message, which comes last: at exit each would print a traceback.
    warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)
    gc.collect()
    print("error: " + "\n".join(lines), file=sys.stderr)
    sys.exit(2)


def _is_user_error(e: Exception) -> bool:
  """Bad input (and divergence) get a message; anything else is a bug and keeps its traceback.

  ValueError covers the data layer's `DataError`, a checkpoint that does not fit the model and
  a workdir in use (`workdir_lock.WorkdirInUseError`); OSError of a full disk (or quota, or a
  read-only filesystem) covers a checkpoint that could not be written.
  """
  if isinstance(e, (UserError, ValueError, FileNotFoundError, PermissionError, FloatingPointError)):
    return True
  if isinstance(e, OSError):
    # gin re-raises an error in a configurable as a proxy whose own errno is None.
    proxied = e.errno is None and hasattr(type(e), "__getattr__")
    return (type(e).__getattr__(e, "errno") if proxied else e.errno) in _STORAGE_ERRNOS
  # gin reports a missing required binding as a TypeError or RuntimeError.
  return isinstance(e, (TypeError, RuntimeError)) and (
    "Gin" in str(e) or "Required bindings" in str(e)
  )
