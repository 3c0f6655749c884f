"""Command-line plumbing shared by the entry points: flags, multi-host start-up, errors.

Every entry point takes `--workdir`, `--gin_file` (repeatable) and `--gin_bindings`
(repeatable); everything else is a gin binding (`scaled_ql.configurables` parses them).
A user's mistake is reported in one line (`run_main`), never as a traceback.
"""

import logging as std_logging
import os
import sys
from collections.abc import Callable

import jax
from absl import flags, logging

flags.DEFINE_string(
  "workdir", None, "Run directory: checkpoints, logs, results. Resumes if it exists."
)
flags.DEFINE_multi_string("gin_file", [], "gin files, relative to the cwd or to the repo's gin/.")
flags.DEFINE_multi_string("gin_bindings", [], 'gin bindings, e.g. "train.num_grad_steps = 10".')
flags.DEFINE_bool(
  "distributed",
  False,
  "Multi-host: call jax.distributed.initialize() (TPU pods "
  "find their hosts; elsewhere pass the three flags below).",
)
flags.DEFINE_string("coordinator_address", None, "Multi-host: process 0's host:port.")
flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.")


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
  jax.distributed.initialize(f.coordinator_address, f.num_processes, f.process_id)
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


def _quiet_library_logs() -> None:
  logging.get_absl_handler().addFilter(
    lambda record: (
      record.levelno >= std_logging.WARNING
      or not any(path in record.pathname for path in _QUIET_PATHS)
    )
  )


def run_main(main: Callable[[], None]) -> None:
  """Runs `main()`, reporting user mistakes and divergence as `error: ...` and exit code 2.

  Set SCALED_QL_TRACEBACK=1 for the traceback.
  """
  _quiet_library_logs()
  try:
    main()
  except Exception as e:  # Re-raised below unless it is the user's mistake.
    if os.environ.get("SCALED_QL_TRACEBACK") or not _is_user_error(e):
      raise
    logging.flush()
    # gin appends "In call to configurable ..." lines: noise for a user's mistake.
    lines = [line for line in str(e).splitlines() if "In call to configurable" not in line]
    print("error: " + "\n".join(lines), file=sys.stderr)
    sys.exit(2)


def _is_user_error(e: Exception) -> bool:
  """Bad input (and divergence) get a message; anything else is a bug and keeps its traceback."""
  if isinstance(e, (UserError, ValueError, FileNotFoundError, PermissionError, FloatingPointError)):
    return True
  # gin reports a missing required binding as a TypeError or RuntimeError.
  return isinstance(e, (TypeError, RuntimeError)) and (
    "Gin" in str(e) or "Required bindings" in str(e)
  )
