"""The gin registry: every builder a gin file may bind, and parsing gin files.

Only entry points import this module (it imports every layer, to register it). gin binds
builders and entry points only; modules, losses and data functions receive plain values.
"""

import inspect
import logging as std_logging
import os
from collections.abc import Sequence

import gin

from scaled_ql import (
  atari,
  data,
  evaluate,
  games,
  initialization,
  losses,
  networks,
  online,
  optimizers,
  trainer,  # noqa: F401  (registers `train`)
  transformer,
)
from scaled_ql.cli import UserError
from scaled_ql.methods.bc import BC
from scaled_ql.methods.decision_transformer import DecisionTransformer
from scaled_ql.methods.q_guided import QGuided
from scaled_ql.methods.scaled_ql import ScaledQL

GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gin")

gin.external_configurable(networks.NetworkConfig, module="networks")
gin.external_configurable(losses.C51, module="losses")
gin.external_configurable(losses.MSE, module="losses")
gin.external_configurable(optimizers.make_optimizer, module="optimizers")
gin.external_configurable(optimizers.make_lamb, module="optimizers")
gin.external_configurable(transformer.TransformerConfig, module="transformer")
gin.external_configurable(DecisionTransformer, module="methods")
gin.external_configurable(QGuided, module="methods")
gin.external_configurable(ScaledQL, module="methods")
gin.external_configurable(BC, module="methods")
gin.external_configurable(initialization.InitFrom, module="initialization")
# The trainer passes these itself: a binding of them would be silently overridden.
gin.external_configurable(
  data.ReplayDataset,
  module="data",
  denylist=["game_names", "local_batch_size", "seed", "process_index", "process_count"],
)
gin.external_configurable(
  online.OnlineSource,
  module="online",
  denylist=["game_names", "local_batch_size", "seed", "process_index", "process_count"],
)
gin.external_configurable(evaluate.make_eval_fn, module="evaluate")
gin.external_configurable(atari.Protocol, module="atari")
gin.constant("TRAIN_GAMES", games.TRAIN_GAMES)
gin.constant("HELD_OUT_GAMES", games.HELD_OUT_GAMES)
gin.constant("MGDT_TRAIN_GAMES", games.MGDT_TRAIN_GAMES)


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


def train_arguments() -> dict:
  """`trainer.train`'s keyword arguments as the parsed gin configures them: the bound values,
  else the function's defaults (a required one that is not bound is absent)."""
  parameters = inspect.signature(trainer.train).parameters.values()
  defaults = {p.name: p.default for p in parameters
              if p.kind is p.KEYWORD_ONLY and p.default is not gin.REQUIRED}  # fmt: skip
  return {**defaults, **gin.get_bindings("train")}
