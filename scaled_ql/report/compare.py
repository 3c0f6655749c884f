r"""Per-game comparison of trained runs with the data they learned from, with corrected verdicts.

  python -m scaled_ql.report.compare --runs=workdirs/local/scaled_ql,workdirs/local/bc \
      --data_dir=workdirs/local/replay

Prints (and with --output writes as Markdown) first the declared confirmatory family, then one
row per game and one for the IQM of human-normalised scores: the behaviour policy's average
score in the data (the mean of its checkpoints' means) and, when the data has several
checkpoints of a schedule of behaviour quality, its best checkpoint's; then each method's latest
evaluations, the runs of one method (its seeds) forming one column, or with
--columns=run_name the runs of one run name (`X`, `X_seed1`, ... form column X: sizes or data
selections of one method). Then the verdicts: for each pair of columns, where one scored above
or below the other, from t-tests over runs that are Holm-corrected within the confirmatory
family and within the exploratory one (`significance` has the procedure, docs/verdicts.md its
simulated error rates). A column with one run gets no verdict; where no difference is
detected, that is all that is said. A declared `A-B:C-D` compares two margins: A's over B
against C's over D (launch/data_quality.sh: Scaled QL's over BC on poor and on all data).
"""

import collections
import os
import re
from collections.abc import Collection, Sequence

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
  "and 'data' (the data's average) or 'best' (its best checkpoint), or of margins A-B:C-D (A's "
  "margin over B against C's over D); every game and the IQM.",
)
_COLUMNS = flags.DEFINE_enum(
  "columns", "method", ["method", "run_name"], "What makes a column: the runs' method, or "
  "their run directory's name less its `_seedN` (a method's sizes or data selections apart).")
_REFERENCE_NAMES = {"data": significance.DATA, "best": significance.BEST}
# What the runs of one column must share (run_info.json): a column is one configuration's seeds.
_KIND = ("num_params", "data_quality", "phase", "init")


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


def column_name(workdir: str, info: dict, columns: str = "method") -> str:
  """A run's column: its method, or (`columns='run_name'`) its directory's name less `_seedN`."""
  if columns == "method":
    return info["method"]
  return re.sub(r"_seed\d+$", "", os.path.basename(_run_path(workdir)))


def _read_columns(run_dirs, protocol, columns_by="method"):
  """({column: [significance.Run]}, {column: [EvalResults]}), a column's runs its seeds.

  Raises:
    cli.UserError: where one column would mix runs of different sizes, data or starts.
  """
  columns, results = collections.defaultdict(list), collections.defaultdict(list)
  kinds = collections.defaultdict(set)
  for d in run_dirs:
    info = runs.read_run_info(d)
    name = column_name(d, info, columns_by)
    result = _latest_results(d, protocol)
    results[name].append(result)
    columns[name].append(significance.Run(
      {g: np.asarray(r.returns, np.float64) for g, r in result.games.items() if r.returns},
      pair_keys(d, info)))  # fmt: skip
    kinds[name].add(tuple(info.get(key) for key in _KIND))
  for name, found in kinds.items():
    differing = [(key, sorted({str(kind[i]) for kind in found})) for i, key in enumerate(_KIND)]
    shown = "; ".join(f"{key} {', '.join(values)}" for key, values in differing if len(values) > 1)
    if shown:
      raise cli.UserError(f"column {name} would mix runs of different {shown}: give them "
                          "distinct method names, or pass --columns=run_name (a column per run "
                          "name)")  # fmt: skip
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


def _resolve_margins(confirmatory, names: Collection[str], strict: bool) -> list[tuple]:
  """The declared pairs, a side `A-B` that is not a column becoming the margin (A, B) of two
  columns. With `strict`, a side that names neither is an error (a typo in the family)."""
  known = set(names) | {significance.DATA, significance.BEST}

  def side(name):
    if name in known:
      return name
    for i in (i for i, char in enumerate(name) if char == "-"):
      if name[:i] in names and name[i + 1 :] in names:
        return (name[:i], name[i + 1 :])
    if strict:
      raise cli.UserError(f"--confirmatory: '{name}' is not a column (the columns: "
                          f"{', '.join(names)}; 'data', 'best', or a margin A-B)")  # fmt: skip
    return name

  resolved = [(side(a), side(b)) for a, b in confirmatory]
  for a, b in resolved:
    if isinstance(a, tuple) != isinstance(b, tuple):
      raise cli.UserError(f"--confirmatory: {a} vs {b} compares a margin with a column; "
                          "declare A-B:C-D or A:B")  # fmt: skip
  return resolved


def _declared(pair) -> str:
  a, b = pair
  if isinstance(a, tuple):
    return (f"{a[0]}-{a[1]} vs {b[0]}-{b[1]} (the margin of {a[0]} over {a[1]} against that "
            f"of {b[0]} over {b[1]})")  # fmt: skip
  return f"{a} vs {b}"


def compare(
  run_dirs: Sequence[str],
  data_dir: str | None,
  protocol: str = "dqn",
  confirmatory: Sequence[tuple] = significance.CONFIRMATORY,
  columns: str = "method",
  strict: bool = False,
) -> str:
  """The comparison as Markdown: the confirmatory family, the table and the verdicts.

  Args:
    run_dirs: evaluated runs.
    data_dir: the collector's output (the data's columns), or None.
    protocol: whose evaluations.
    confirmatory: the declared pairs A:B (column names, DATA or BEST), a side `A-B` naming
      the margin of column A over column B.
    columns: "method" or "run_name" (`column_name`).
    strict: a declared name that is no column is an error (else it is never tested).
  """
  table_columns, results = _read_columns(run_dirs, protocol, columns)
  confirmatory = _resolve_margins(confirmatory, list(table_columns), strict)
  game_names = sorted({g for rs in table_columns.values() for r in rs for g in r.returns})
  table = significance.compare_columns(
    table_columns, _read_data(data_dir, game_names), confirmatory
  )
  declared = " and ".join(_declared(pair) for pair in confirmatory)
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
  table = compare(_RUNS.value, _DATA_DIR.value, _PROTOCOL.value, confirmatory, _COLUMNS.value,
                  strict=_CONFIRMATORY.present)  # fmt: skip
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
