"""Command-line and gin plumbing shared by the entry points.

Every entry point takes `--workdir`, `--gin_file` (repeatable) and `--gin_bindings`
(repeatable); everything else is a gin binding. gin binds builders and entry points
only (registered here); modules, losses and data functions receive plain values.
"""

import logging as std_logging
import os
import sys
from collections.abc import Callable, Sequence

import gin
import jax
from absl import flags, logging

# trainer registers `train` with gin on import.
from scaled_ql import atari, data, evaluate, games, losses, networks, optimizers, trainer  # noqa: F401

GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gin")

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

# -- The configurables: builders and entry points only.
gin.external_configurable(networks.NetworkConfig, module="networks")
gin.external_configurable(losses.LossConfig, module="losses")
gin.external_configurable(optimizers.make_optimizer, module="optimizers")
# The trainer passes these itself: a binding of them would be silently overridden.
gin.external_configurable(
  data.ReplayDataset,
  module="data",
  denylist=["game_names", "local_batch_size", "seed", "process_index", "process_count"],
)
gin.external_configurable(evaluate.make_eval_fn, module="evaluate")
gin.external_configurable(atari.Protocol, module="atari")
gin.constant("TRAIN_GAMES", games.TRAIN_GAMES)
gin.constant("HELD_OUT_GAMES", games.HELD_OUT_GAMES)
gin.constant("MGDT_TRAIN_GAMES", games.MGDT_TRAIN_GAMES)


class UserError(Exception):
  """A mistake in the command line or configuration: reported in one line, no traceback."""


def resolve_gin_file(path: str) -> str:
  """Finds a gin file relative to the cwd, else to the repo's gin/ directory."""
  for candidate in (path, os.path.join(GIN_DIR, path)):
    if os.path.isfile(candidate):
      return candidate
  available = sorted(
    os.path.relpath(os.path.join(root, f), GIN_DIR)
    for root, _, files in os.walk(GIN_DIR)
    for f in files
    if f.endswith(".gin")
  )
  raise UserError(f"gin file {path!r} not found. Available in gin/: {', '.join(available)}")


def parse_gin(gin_files: Sequence[str], gin_bindings: Sequence[str]) -> None:
  """Parses gin files and bindings; an unknown configurable or parameter is an error."""
  gin.clear_config()
  gin.add_config_file_search_path(GIN_DIR)
  files = [resolve_gin_file(f) for f in gin_files]
  # gin logs an error for every search-path prefix an `include` is not under; a missing
  # include still raises below, so silence the noise.
  std_logging.disable(std_logging.ERROR)
  try:
    gin.parse_config_files_and_bindings(files, gin_bindings, finalize_config=False)
  except (ValueError, KeyError, SyntaxError, OSError) as e:
    # gin's own message names the bad binding and where it came from.
    raise UserError(f"bad gin configuration: {' '.join(str(e).split())}") from e
  finally:
    std_logging.disable(std_logging.NOTSET)


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
