r"""Checks a study's planned runs before any of them trains: `python -m scaled_ql.check_runs`.

  python -m scaled_ql.check_runs --plan=PLAN_FILE

The studies' launchers (launch/scaling.sh, ablations.sh, data_quality.sh, through
launch/study.sh) write one planned `python -m scaled_ql.pretrain` per line: its arguments,
tab-separated, `--workdir=...` first. This checks every line before the first run trains, so a
mistake in the twentieth run does not surface hours into the study:
  * its gin files and bindings parse (unknown bindings are errors) and build the method;
  * its games' data is converted in the bound shard directory (metadata only);
  * a run directory that already holds a run holds this configuration: the same method and
    its whole configuration, games, seed, batch, weight averaging and data label (then the
    same command resumes it, or reuses it when finished; the trainer refuses the others only
    once it reaches them);
  * two lines naming one run directory plan the same configuration.
The first problem is printed in one line, `error: ...`, with exit status 2.
"""

import inspect
import json
import os
from collections.abc import Iterator, Sequence

import gin
from absl import app, flags

from scaled_ql import cli, configurables, games, runs, trainer
from scaled_ql.data import shards
from scaled_ql.methods import loading

_PLAN = flags.DEFINE_string("plan", None, "File of planned pretrain commands, one a line.")

# What a run directory must agree on with its planned command (the trainer's identity fields,
# and the data's label, which tells a study's data selections apart).
IDENTITY = ("method", "method_class", "method_config", "game_names", "seed",
            "global_batch_size", "ema_decay", "data_quality")  # fmt: skip
_ARGS = ("--workdir=", "--gin_file=", "--gin_bindings=")


def read_plan(text: str) -> list[tuple[str, list[str], list[str]]]:
  """[(workdir, gin files, gin bindings)] from a plan's lines (tab-separated arguments)."""
  planned = []
  for number, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    args = {prefix: [] for prefix in _ARGS}
    for arg in line.split("\t"):
      prefix = next((p for p in _ARGS if arg.startswith(p)), None)
      if prefix is None:
        raise cli.UserError(f"plan line {number}: '{arg}' is not one of {', '.join(_ARGS)}...")
      args[prefix].append(arg[len(prefix) :])
    if len(args["--workdir="]) != 1:
      raise cli.UserError(f"plan line {number}: needs exactly one --workdir")
    planned.append((args["--workdir="][0], args["--gin_file="], args["--gin_bindings="]))
  return planned


def planned_identity(gin_files: Sequence[str], gin_bindings: Sequence[str]) -> dict:
  """The identity fields the trainer would record for this configuration (JSON form); checks
  that the selected data of its games is converted."""
  configurables.parse_gin(gin_files, gin_bindings)
  bound = gin.get_bindings("train")  # Resolves references: builds the method.
  defaults = inspect.signature(trainer.train).parameters

  def value(name):
    return bound[name] if name in bound else defaults[name].default

  game_names = list(value("game_names"))
  games.validate_games(game_names)
  data = gin.get_bindings("data.ReplayDataset")
  if bound.get("dataset_fn") is not None and "shard_dir" in data:
    for game in game_names:
      shards.find_segments(data["shard_dir"], game, shards.parse_runs(data.get("runs", (1,))),
                           data.get("suffixes", "all"), data.get("row_fraction", 1.0))  # fmt: skip
  identity = dict(
    **loading.method_record(value("method")),
    game_names=game_names,
    seed=value("seed"),
    global_batch_size=value("global_batch_size"),
    ema_decay=value("ema_decay"),
  )
  if bound.get("data_quality"):  # Else the data source names it (the paper's selections).
    identity["data_quality"] = bound["data_quality"]
  return json.loads(json.dumps(identity))  # The stored form: tuples become lists.


def differences(stored, planned, path: str = "") -> Iterator[str]:
  """`path: stored -> planned` for each differing leaf of two JSON values."""
  if isinstance(stored, dict) and isinstance(planned, dict):
    for key in sorted(set(stored) | set(planned)):
      yield from differences(stored.get(key), planned.get(key), f"{path}.{key}" if path else key)
  elif stored != planned:
    yield f"{path}: {stored!r} -> {planned!r}"


def _one_line(workdir: str, found: list[str], holder: str) -> str:
  shown = "; ".join(found[:3]) + (f"; and {len(found) - 3} more" if len(found) > 3 else "")
  return f"{workdir} {holder} ({shown}); move it away or choose another WORKDIR."


def check(planned: Sequence[tuple[str, list[str], list[str]]]) -> tuple[int, int]:
  """Checks every planned run (module docstring); returns (runs that exist, new runs)."""
  seen = {}
  for workdir, gin_files, gin_bindings in planned:
    try:
      identity = planned_identity(gin_files, gin_bindings)
    except (cli.UserError, ValueError) as e:  # Bad gin, games or data (cli.run_main's others).
      message = " ".join(str(e).split())
      raise cli.UserError(f"the planned run {workdir}: {message}") from None
    key = os.path.abspath(workdir)
    if key in seen and seen[key] != identity:
      found = list(differences(seen[key], identity))
      raise cli.UserError(_one_line(workdir, found, "is planned twice with different settings"))
    seen[key] = identity
    if not runs.is_run(workdir):
      continue
    stored = json.loads(json.dumps(runs.read_run_info(workdir)))
    found = [d for field in IDENTITY if field in stored and field in identity
             for d in differences(stored[field], identity[field], field)]  # fmt: skip
    if found:
      raise cli.UserError(_one_line(workdir, found, "holds a run of another configuration"))
  existing = sum(runs.is_run(w) for w in seen)
  return existing, len(seen) - existing


def main() -> None:
  if not _PLAN.value or not os.path.isfile(_PLAN.value):
    raise cli.UserError(f"--plan={_PLAN.value}: not a file of planned runs.")
  with open(_PLAN.value) as f:
    existing, new = check(read_plan(f.read()))
  print(f"Checked {existing + new} planned runs: {existing} exist (the same command resumes "
        f"them, or reuses them when finished), {new} are new.")  # fmt: skip


if __name__ == "__main__":
  app.run(lambda argv: cli.run_main(main))
