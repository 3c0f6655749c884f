r"""Fine-tuning a pretrained run: `python -m scaled_ql.finetune`.

  python -m scaled_ql.finetune --game=Breakout --variant=1         # online, on a game variant
  python -m scaled_ql.finetune --mode=offline --game=Pong \
      --gin_bindings="data.ReplayDataset.shard_dir = '/data/shards'"   # offline, an unseen game
  ... --init_from=none                    # the same network from scratch, for the comparison

`--init_from` (default: the embedded default's pretrained run, workdirs/local/scaled_ql) is a
run directory or one of its checkpoints (`RUN/checkpoints/STEP`). The network is the starting
run's own (from its run_info.json; with --init_from=none, --network_from's, by default the
default run's if it exists, so that scratch and pretrained compare the same network). Online
(`gin/finetune_online.gin`): the trainer learns from `online.OnlineSource` on the variant and
evaluates on it. Offline (`gin/finetune_offline.gin`): it learns from 1% of the game's data. A
CPU model (torso 'small' or 'tiny', as the embedded default's) gets the miniature budgets
instead, `gin/local_finetune_{online,offline}.gin`, unless --gin_file names others. The same
command in the same workdir resumes.
"""

import os

import gin
from absl import app, flags, logging

from scaled_ql import atari, cli, configurables, games, initialization, runs, trainer

DEFAULT_INIT_FROM = os.path.join("workdirs", "local", "scaled_ql")
CPU_TORSOS = ("small", "tiny")  # gin/models/{small,tiny}.gin: sized for a few CPU cores.

_GAME = flags.DEFINE_string("game", None, "The game to fine-tune on.")
_VARIANT = flags.DEFINE_integer(
  "variant", None, "Online: index into atari.variants(game); default 1 (the paper's, unverified)."
)
_MODE = flags.DEFINE_enum("mode", None, ["online", "offline"], "Default: online.")
_INIT_FROM = flags.DEFINE_string(
  "init_from", DEFAULT_INIT_FROM, "Pretrained run or checkpoint to start from; 'none': scratch."
)
_NETWORK_FROM = flags.DEFINE_string(
  "network_from",
  None,
  "With --init_from=none: the run whose network to build (default: "
  f"{DEFAULT_INIT_FROM} if it exists, else gin's).",
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of parameters, data and environments.")
_ALLOW_SEEN = flags.DEFINE_bool(
  "allow_seen_game", False, "Offline: allow a game the pretrained run already trained on."
)


def _source_info(path: str | None, flag: str = "init_from") -> dict | None:
  """The run_info of the run `path` names (a run or `RUN/checkpoints/STEP`)."""
  if path is None:
    return None
  run, _ = initialization.InitFrom(source=path).run_and_step()
  if not runs.is_run(run):
    scratch = ", or pass --init_from=none to train the same network from scratch"
    raise cli.UserError(
      f"--{flag}={path} is not a training run (no {runs.RUN_INFO_FILE}). Make one with "
      "`bash launch/local.sh` (or `python -m scaled_ql.pretrain`)"
      f"{scratch if flag == 'init_from' else ''}."
    )
  return runs.read_run_info(run)


def _bindings(mode: str, game: str, variant: int, init_from: str | None, network: dict | None):
  """The gin bindings the flags stand for."""
  bindings = [f"train.game_names = ['{game}']", f"train.seed = {_SEED.value}"]
  if mode == "online":
    bindings += [f"online.OnlineSource.variant = {variant}",
                 f"evaluate.make_eval_fn.variant = {variant}"]  # fmt: skip
  if init_from is not None:
    bindings += ["train.init_from = @initialization.InitFrom()",
                 f"initialization.InitFrom.source = '{init_from}'"]  # fmt: skip
  for name, value in (network or {}).items():
    value = tuple(value) if isinstance(value, list) else value
    bindings.append(f"networks.NetworkConfig.{name} = {value!r}")
  return bindings


def _bound(name: str) -> bool:
  try:
    gin.query_parameter(name)
  except ValueError:
    return False
  return True


def default_gin_file(mode: str, network: dict | None) -> str:
  """The budget for a CPU model (the embedded default's) is a miniature; else the paper's."""
  cpu_model = bool(network) and network.get("torso") in CPU_TORSOS
  return f"{'local_' if cpu_model else ''}finetune_{mode}.gin"


def main() -> None:
  if not _GAME.value:
    raise cli.UserError("--game is required, e.g. --game=Breakout --variant=1.")
  game = _GAME.value
  games.validate_games([game])
  mode = _MODE.value or "online"
  variant = _VARIANT.value if _VARIANT.value is not None else (1 if mode == "online" else 0)
  if mode == "online":
    atari.variant_settings(game, variant)  # Names the valid variants.
  elif _VARIANT.value:
    raise cli.UserError("--variant is for online fine-tuning; offline uses the game's data.")
  init_from = None if _INIT_FROM.value.lower() == "none" else _INIT_FROM.value
  source = _source_info(init_from)
  if mode == "offline" and source and game in source["game_names"] and not _ALLOW_SEEN.value:
    raise cli.UserError(
      f"{init_from} already trained on {game}: offline fine-tuning is meant for an unseen game "
      f"(held-out: {', '.join(games.HELD_OUT_GAMES)}). Pass --allow_seen_game to do it anyway."
    )
  if _NETWORK_FROM.value and init_from:
    raise cli.UserError("--network_from is for --init_from=none (a pretrained run brings its own).")
  if _NETWORK_FROM.value:
    source = _source_info(_NETWORK_FROM.value, "network_from")  # Scratch, with that run's network.
  elif source is None and runs.is_run(DEFAULT_INIT_FROM):
    source = runs.read_run_info(DEFAULT_INIT_FROM)  # Scratch: the default run's network.
  network = source and source.get("method_config", {}).get("network")
  label = "pretrained" if init_from else "scratch"
  workdir = flags.FLAGS.workdir or os.path.join(
    "workdirs", "finetune", mode, f"{game}_v{variant}" if mode == "online" else game,
    f"{label}_seed{_SEED.value}",
  )  # fmt: skip
  gin_files, gin_bindings = cli.gin_files_and_bindings(required=False)
  gin_files = gin_files or [default_gin_file(mode, network)]
  configurables.parse_gin(gin_files, _bindings(mode, game, variant, init_from, network)
                          + gin_bindings)  # fmt: skip
  reads_shards = getattr(gin.query_parameter("train.dataset_fn"), "selector", "").endswith(
    "ReplayDataset"
  )
  if reads_shards and not _bound("data.ReplayDataset.shard_dir"):
    raise cli.UserError(
      f"Fine-tuning reads {game}'s converted DQN Replay data: pass "
      "--gin_bindings=\"data.ReplayDataset.shard_dir = 'DIR'\" (DIR from `python -m "
      "data_prep.convert`; `bash launch/finetune.sh` collects and converts a local slice)."
    )
  cli.initialize_distributed()
  logging.info("Fine-tuning %s (%s, variant %d) from %s into %s with %s.", game, mode, variant,
               init_from or "scratch", workdir, ", ".join(gin_files))  # fmt: skip
  final = trainer.train(workdir)
  shown = {k: round(v, 2) for k, v in final.items() if k.startswith(("eval/", "online/"))}
  logging.info("Done: %s. Run directory: %s", shown, workdir)


if __name__ == "__main__":
  app.run(lambda argv: cli.run_main(main))
