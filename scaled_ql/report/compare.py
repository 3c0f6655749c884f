r"""Per-game comparison of trained runs with the data they learned from.

  python -m scaled_ql.report.compare --runs=workdirs/local/scaled_ql,workdirs/local/bc \
      --data_dir=workdirs/local/replay

Prints (and with --output writes as Markdown) one row per game: the behaviour policy's
average score in the data (and, when the data has several checkpoints of a schedule of
behaviour quality, the best checkpoint's average), then each run's latest evaluation (mean
± sd over episodes, and human-normalised), followed by plain statements of who beat whom.
It states what the runs measured, including when offline RL has not overtaken BC or the data.
"""

import itertools
import os
from collections.abc import Sequence

import numpy as np
from absl import app, flags, logging

from scaled_ql import cli, games, runs
from scaled_ql.data import dqn_replay

_RUNS = flags.DEFINE_list("runs", None, "Run directories (trained and evaluated).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Collector output with episodes.csv logs.")
_OUTPUT = flags.DEFINE_string("output", None, "Also write the table to this Markdown file.")
_PROTOCOL = flags.DEFINE_enum("protocol", "dqn", ["dqn", "mgdt", "custom"], "Evaluations to use.")


def _latest_results(workdir: str, protocol: str) -> runs.EvalResults:
  """The evaluation of the latest checkpoint under `protocol` (default game, variant 0)."""
  candidates = [
    r for r in runs.read_all_results(workdir) if r.protocol_name == protocol and r.variant == 0
  ]
  if not candidates:
    raise FileNotFoundError(
      f"{workdir} has no evaluation results under the {protocol} protocol: run `python -m "
      f"scaled_ql.evaluate --workdir={workdir}` first."
    )
  return runs.latest(candidates)


def _cell(returns: Sequence[float]) -> str:
  return f"{np.mean(returns):.1f} ± {np.std(returns):.1f} ({len(returns)})"


def _hns(game: str, score: float) -> str:
  if game not in games.HUMAN_SCORES:
    return "—"
  return f"{100 * games.human_normalized_score(game, score):.1f}%"


def compare(run_dirs: Sequence[str], data_dir: str | None, protocol: str = "dqn") -> str:
  """The comparison as Markdown: a per-game table and one verdict line per run pair."""
  names = [runs.read_run_info(d)["method"] for d in run_dirs]
  results = [_latest_results(d, protocol) for d in run_dirs]
  game_names = sorted({g for r in results for g in r.games})
  by_suffix = {}  # game -> {suffix: episode scores}, for the games whose data logged episodes
  for game in game_names if data_dir else ():
    try:
      by_suffix[game] = dqn_replay.read_episode_returns(data_dir, game)
    except dqn_replay.DataError as e:
      logging.warning("no data column for %s: %s", game, e)
  by_suffix = {game: by_game for game, by_game in by_suffix.items() if by_game}
  # With a schedule of behaviour quality (several checkpoints), also the best checkpoint's.
  show_best = any(len(by_game) > 1 for by_game in by_suffix.values())
  header = ["Game", "Data (behaviour)"] + (["Data, best checkpoint"] if show_best else [])
  for name, r in zip(names, results, strict=True):
    header += [f"{name} @ step {r.checkpoint_step}", f"{name} HNS"]
  rows, data_means, best_means = [], {}, {}
  for game in game_names:
    row = [game]
    if game in by_suffix:
      data_returns = np.concatenate(list(by_suffix[game].values()))
      data_means[game] = float(np.mean(data_returns))
      row.append(_cell(data_returns))
      if show_best:
        best = max(by_suffix[game], key=lambda k: np.mean(by_suffix[game][k]))
        best_means[game] = float(np.mean(by_suffix[game][best]))
        row.append(f"{_cell(by_suffix[game][best])} [ckpt {best}]")
    else:
      row += ["—"] * (1 + show_best)
    for r in results:
      returns = r.games[game].returns if game in r.games else None
      row += [_cell(returns), _hns(game, np.mean(returns))] if returns else ["—", "—"]
    rows.append(row)

  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  lines.append("")
  means = [{g: float(np.mean(x.returns)) for g, x in r.games.items()} for r in results]
  for name, mean in zip(names, means, strict=True):
    for what, reference in (
      ("the data's average", data_means),
      ("the data's best checkpoint", best_means),
    ):
      if reference:
        above = [g for g in reference if g in mean and mean[g] > reference[g]]
        lines.append(
          f"- {name} scored above {what} on {len(above)} of "
          f"{len(reference)} games{': ' + ', '.join(above) if above else ''}."
        )
  for i, j in itertools.combinations(range(len(names)), 2):
    wins = [g for g in game_names if g in means[i] and g in means[j] and means[i][g] > means[j][g]]
    lines.append(
      f"- {names[i]} scored above {names[j]} on {len(wins)} of {len(game_names)} "
      f"games{': ' + ', '.join(wins) if wins else ''}."
    )
  protocols = {r.protocol_name for r in results}
  lines.append(
    f"- Evaluation protocol: {', '.join(sorted(protocols))}; epsilon "
    f"{results[0].epsilon}; ALE {results[0].ale_version}."
  )
  return "\n".join(lines)


def main() -> None:
  if not _RUNS.value:
    raise cli.UserError("--runs is required: comma-separated run directories.")
  for run_dir in _RUNS.value:
    if not os.path.isdir(run_dir):
      raise cli.UserError(f"--runs: {run_dir} does not exist.")
  table = compare(_RUNS.value, _DATA_DIR.value, _PROTOCOL.value)
  print(table)
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w") as f:
      f.write(table + "\n")


if __name__ == "__main__":
  app.run(lambda argv: cli.run_main(main))
