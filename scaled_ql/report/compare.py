r"""Per-game comparison of trained runs with the data they learned from, with corrected verdicts.

  python -m scaled_ql.report.compare --runs=workdirs/local/scaled_ql,workdirs/local/bc \
      --data_dir=workdirs/local/replay

Prints (and with --output writes as Markdown) first the declared confirmatory family, then one
row per game and one for the IQM of human-normalised scores: the behaviour policy's average
score in the data (the mean of its checkpoints' means) and, when the data has several
checkpoints of a schedule of behaviour quality, its best checkpoint's; then each method's latest
evaluations, the runs of one method (its seeds) forming one column. Then the verdicts: for each
pair of columns, where one scored above or below the other, from t-tests over runs that are
Holm-corrected within the confirmatory family and within the exploratory one
(`significance` has the procedure, docs/verdicts.md its simulated error rates). A column with
one run gets no verdict; where no difference is detected, that is all that is said.
"""

import collections
import os
from collections.abc import Sequence

import numpy as np
from absl import app, flags, logging
from etils import epath

from scaled_ql import cli, games, runs
from scaled_ql.data import dqn_replay
from scaled_ql.report import archive, significance

_RUNS = flags.DEFINE_list("runs", None, "Run directories (trained and evaluated), or gs:// URIs.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Collector output with episodes.csv logs.")
_OUTPUT = flags.DEFINE_string("output", None, "Also write the table to this Markdown file.")
_ARCHIVE = flags.DEFINE_string(
  "archive", None, "Also keep the runs' small files and the data's episode logs in this "
  "directory, to commit (scaled_ql/report/archive.py): the same table can be made from there.")
_PROTOCOL = flags.DEFINE_enum("protocol", "dqn", ["dqn", "mgdt", "custom"], "Evaluations to use.")
_CONFIRMATORY = flags.DEFINE_list(
  "confirmatory",
  ["scaled_ql:bc", "scaled_ql:best"],
  "The confirmatory family, declared before the results: pairs A:B of methods, or of a method "
  "and 'data' (the data's average) or 'best' (its best checkpoint); every game and the IQM.",
)
_REFERENCE_NAMES = {"data": significance.DATA, "best": significance.BEST}


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


def _run_path(path: str) -> str:
  """A run directory's path in one spelling (a checkpoint `RUN/checkpoints/STEP` -> RUN)."""
  path = path.split("/checkpoints/")[0].rstrip("/")
  return path if runs.is_uri(path) else os.path.abspath(path)


def pair_keys(workdir: str, info: dict) -> frozenset:
  """What pairs a run with runs of other columns: the same seed in the same directory of runs
  (trained on the same data with the same batch order, evaluated on the same seeds), or one
  built from the other (a Q-guided run's proposal, `init_from`, and its critic)."""
  path = _run_path(workdir)
  keys = {("run", path)}
  if "seed" in info:
    keys.add(("seed", os.path.dirname(path), info["seed"]))
  sources = [(info.get("init_from") or {}).get("source"),
             (info.get("method_config") or {}).get("critic_from")]  # fmt: skip
  keys.update(("run", _run_path(s)) for s in sources if isinstance(s, str))
  return frozenset(keys)


def _hns(game: str, score: float) -> str:
  if game not in games.HUMAN_SCORES:
    return "—"
  return f"{100 * games.human_normalized_score(game, score):.1f}%"


def _cell(cell: significance.Cell | None, percent: bool = False) -> str:
  if cell is None:
    return "—"
  scale, unit = (100, "%") if percent else (1, "")
  return (f"{scale * cell.value:.1f}{unit} [{scale * cell.low:.1f}, {scale * cell.high:.1f}] "
          f"({cell.basis})")  # fmt: skip


def _p(p: float) -> str:
  return "p_Holm<0.001" if p < 0.001 else f"p_Holm={p:.2g}"


def _family_lines(family: str, comparisons: list[significance.Comparison]) -> list[str]:
  """The family's size and guarantee, then one line per pair of columns."""
  m = len(comparisons)
  lines = [
    f"{family.capitalize()} ({m} comparisons, Holm-corrected within them): the chance of one "
    f"or more false verdicts among them is at most {significance.ALPHA:.0%}, where {m} "
    f"uncorrected tests at {significance.ALPHA:.0%} would give {significance.ALPHA * m:.2f} "
    "false verdicts on average by chance alone."
  ]
  by_pair = collections.defaultdict(list)
  for c in comparisons:
    by_pair[c.a, c.b].append(c)
  for (a, b), tested in by_pair.items():
    parts = []
    for label, sign in (("above", 1), ("below", -1), ("no difference detected", 0)):
      hit = [f"{c.row} {_p(c.p_holm)}" for c in tested
             if c.verdict == sign and c.row != significance.IQM_ROW]  # fmt: skip
      parts.append(f"{label} on {len(hit)}{' (' + ', '.join(hit) + ')' if hit else ''}")
    num_games = sum(c.row != significance.IQM_ROW for c in tested)
    text = (f"- {a} vs {b} ({'; '.join(sorted({c.design for c in tested}))}): "
            f"{', '.join(parts)} of {num_games} games")  # fmt: skip
    for c in (c for c in tested if c.row == significance.IQM_ROW):
      label = {1: "above", -1: "below", 0: "no difference detected"}[c.verdict]
      text += f"; IQM: {label} ({_p(c.p_holm)})"
    lines.append(text + ".")
  return lines


def _read_columns(run_dirs, protocol):
  """({method: [significance.Run]}, {method: [EvalResults]}), a method's runs in one column."""
  columns, results = collections.defaultdict(list), collections.defaultdict(list)
  for d in run_dirs:
    info = runs.read_run_info(d)
    result = _latest_results(d, protocol)
    results[info["method"]].append(result)
    columns[info["method"]].append(significance.Run(
      {g: np.asarray(r.returns, np.float64) for g, r in result.games.items() if r.returns},
      pair_keys(d, info)))  # fmt: skip
  return columns, results


def _read_data(data_dir, game_names):
  """game -> {checkpoint suffix: episode returns}, for the games whose data logged episodes."""
  data = {}
  for game in game_names if data_dir else ():
    try:
      data[game] = dqn_replay.read_episode_returns(data_dir, game)
    except dqn_replay.DataError as e:
      logging.warning("no data column for %s: %s", game, e)
  return {game: by_suffix for game, by_suffix in data.items() if by_suffix}


def _table_lines(table: significance.Table, results) -> list[str]:
  """The Markdown table: a row per game and the IQM row; the data's columns, then the methods'."""
  references = [significance.DATA] + ([significance.BEST] if table.best_checkpoint else [])
  header = ["Game", "Data (behaviour)"] + (["Data, best checkpoint"] if table.best_checkpoint
                                           else [])  # fmt: skip
  for name, rs in results.items():
    steps = "/".join(str(s) for s in sorted({r.checkpoint_step for r in rs}))
    header += [f"{name} @ step {steps}", f"{name} HNS"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for row in table.rows:
    aggregate = row == significance.IQM_ROW
    cells = [row] + [_cell(table.cells.get((ref, row)), aggregate) for ref in references]
    if row in table.best_checkpoint:
      cells[-1] += f" [ckpt {table.best_checkpoint[row]}]"
    for name in results:
      cell = table.cells.get((name, row))
      if aggregate:
        cells += ["—", _cell(cell, percent=True)]
      else:
        cells += [_cell(cell), "—" if cell is None else _hns(row, cell.value)]
    lines.append("| " + " | ".join(cells) + " |")
  return lines


def _verdict_lines(table: significance.Table) -> list[str]:
  """The verdicts, family by family, then the pairs without a verdict and why."""
  lines = []
  for family in ("confirmatory", "exploratory"):
    members = [c for c in table.comparisons if c.family == family]
    if members:
      lines += _family_lines(family, members)
  untested = collections.defaultdict(list)  # why -> the pairs without a verdict for it
  for a, b, _, why in table.untested:
    if (a, b) not in untested[why]:
      untested[why].append((a, b))
  for why, pairs in untested.items():
    lines.append(f"- No verdict where {why} ({', '.join(f'{a} vs {b}' for a, b in pairs)}): a "
                 f"verdict needs {significance.MIN_RUNS} or more runs (pairs of runs where "
                 "paired) on a row.")  # fmt: skip
  return lines


def compare(
  run_dirs: Sequence[str],
  data_dir: str | None,
  protocol: str = "dqn",
  confirmatory: Sequence[tuple[str, str]] = significance.CONFIRMATORY,
) -> str:
  """The comparison as Markdown: the confirmatory family, the table and the verdicts."""
  columns, results = _read_columns(run_dirs, protocol)
  game_names = sorted({g for rs in columns.values() for r in rs for g in r.returns})
  table = significance.compare_columns(columns, _read_data(data_dir, game_names), confirmatory)
  declared = " and ".join(f"{a} vs {b}" for a, b in confirmatory)
  lines = [
    f"Confirmatory family, declared before the results: {declared}, on each game and on the "
    "IQM of human-normalised scores; every other comparison is exploratory. Each family is "
    f"Holm-corrected to a {significance.ALPHA:.0%} family-wise error rate.",
    "",
    *_table_lines(table, results),
    "",
    *_verdict_lines(table),
  ]
  protocols = {r.protocol_name for rs in results.values() for r in rs}
  first = next(iter(results.values()))[0]
  lines += [
    "- Cells: mean [95% interval] (what it rests on). A method's value is the mean of its runs' "
    "means: with 2 or more runs the interval is a t interval over runs (seeds); with 1 run it is "
    "a bootstrap interval over its episodes, which says nothing of another seed. The data's "
    "average is the mean of its checkpoints' means; its best checkpoint is chosen inside each "
    f"of {significance.BOOTSTRAP_REPS} resamples of its episodes. The IQM row: per run, the 25% "
    "trimmed mean over games of human-normalised means.",
    "- Verdicts: two-sided t-tests over runs (paired where runs share a seed and directory or "
    "one was built from the other), Holm-adjusted p-values; 'no difference detected' is not "
    "evidence of equal scores: with few runs only large differences can be detected "
    "(docs/verdicts.md).",
    f"- Evaluation protocol: {', '.join(sorted(protocols))}; epsilon {first.epsilon}; "
    f"ALE {first.ale_version}.",
  ]
  return "\n".join(lines)


def _parse_confirmatory(pairs: Sequence[str]) -> list[tuple[str, str]]:
  parsed = []
  for pair in pairs:
    a, sep, b = pair.partition(":")
    if not sep or not a or not b:
      raise cli.UserError(f"--confirmatory: '{pair}' is not A:B (e.g. scaled_ql:bc).")
    parsed.append((_REFERENCE_NAMES.get(a, a), _REFERENCE_NAMES.get(b, b)))
  return parsed


def main() -> None:
  if not _RUNS.value:
    raise cli.UserError("--runs is required: comma-separated run directories.")
  for run_dir in _RUNS.value:
    if not epath.Path(run_dir).is_dir():
      raise cli.UserError(f"--runs: {run_dir} does not exist.")
  confirmatory = _parse_confirmatory(_CONFIRMATORY.value)
  table = compare(_RUNS.value, _DATA_DIR.value, _PROTOCOL.value, confirmatory)
  print(table)
  if _OUTPUT.value:
    epath.Path(_OUTPUT.value).write_text(table + "\n")
  if _ARCHIVE.value:
    try:
      kept = archive.archive(_RUNS.value, _ARCHIVE.value, _DATA_DIR.value)
    except ValueError as e:
      raise cli.UserError(str(e)) from None
    print(f"Archived {len(kept)} runs in {_ARCHIVE.value}.")


if __name__ == "__main__":
  app.run(lambda argv: cli.run_main(main))
