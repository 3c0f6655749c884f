r"""Per-game comparison of trained runs with the data they learned from.

  python -m scaled_ql.report.compare --runs=workdirs/local/scaled_ql,workdirs/local/bc \
      --data_dir=workdirs/local/replay

Prints (and with --output writes as Markdown) one row per game: the behaviour policy's
average score in the data (and, when the data has several checkpoints of a schedule of
behaviour quality, the best checkpoint's average), then each method's latest evaluations:
the runs of one method (its seeds) form one column, the mean of their per-run means with a
95% bootstrap interval over runs and, within each run, episodes. Then, for each method, plain
statements of where it scored above or below the data and the other methods: a difference
counts only when its bootstrap interval excludes 0, and the rest is said to be within noise.
It states what the runs measured, including when offline RL has not overtaken BC or the data.
"""

import collections
import itertools
import zlib
from collections.abc import Sequence

import numpy as np
from absl import app, flags, logging
from etils import epath

from scaled_ql import cli, games, runs
from scaled_ql.data import dqn_replay

_RUNS = flags.DEFINE_list("runs", None, "Run directories (trained and evaluated), or gs:// URIs.")
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


BOOTSTRAP_REPS = 2000


class Estimate:
  """A mean over runs (each run's mean over its episodes) and its bootstrap distribution."""

  def __init__(self, per_run: Sequence[Sequence[float]], key: str):
    """Args: per_run, each run's episode returns; key, seeds the resampling (a table is the
    same every time it is made)."""
    samples = [np.asarray(x, np.float64) for x in per_run]
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    reps = BOOTSTRAP_REPS
    # [R, reps]: each run's mean over its episodes resampled; then runs resampled.
    run_means = np.stack([x[rng.integers(0, len(x), (reps, len(x)))].mean(axis=1) for x in samples])
    picked = rng.integers(0, len(samples), (reps, len(samples)))
    self.draws = run_means[picked, np.arange(reps)[:, None]].mean(axis=1)  # [reps]
    self.value = float(np.mean([x.mean() for x in samples]))
    self.shape = (len(samples), sum(len(x) for x in samples))

  def cell(self, runs_too: bool = True) -> str:
    low, high = np.percentile(self.draws, [2.5, 97.5])
    runs, episodes = self.shape
    size = f"{runs}×{episodes // runs}" if runs_too else f"{episodes}"
    if runs_too and episodes % runs:
      size = f"{runs} runs, {episodes}"
    return f"{self.value:.1f} [{low:.1f}, {high:.1f}] ({size})"


def _verdict(a: Estimate, b: Estimate) -> int:
  """+1 / -1 when a's mean is above / below b's with a difference interval excluding 0, else 0."""
  low, high = np.percentile(a.draws - b.draws, [2.5, 97.5])
  return 1 if low > 0 else -1 if high < 0 else 0


def _hns(game: str, score: float) -> str:
  if game not in games.HUMAN_SCORES:
    return "—"
  return f"{100 * games.human_normalized_score(game, score):.1f}%"


def _summary(name: str, what: str, verdicts: dict[str, int]) -> str:
  """One line: where `name` scored above, below or within noise of `what`."""
  parts = []
  for label, sign in (("above", 1), ("below", -1), ("within noise", 0)):
    hit = [g for g, v in verdicts.items() if v == sign]
    parts.append(f"{label} on {len(hit)}{' (' + ', '.join(hit) + ')' if hit else ''}")
  return f"- {name} vs {what}: {', '.join(parts)} of {len(verdicts)} games."


def compare(run_dirs: Sequence[str], data_dir: str | None, protocol: str = "dqn") -> str:
  """The comparison as Markdown: a per-game table and the verdicts of each method."""
  by_method = collections.defaultdict(list)  # method -> its runs' latest results
  for d in run_dirs:
    by_method[runs.read_run_info(d)["method"]].append(_latest_results(d, protocol))
  names = list(by_method)
  game_names = sorted({g for rs in by_method.values() for r in rs for g in r.games})
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
  for name, rs in by_method.items():
    steps = "/".join(str(s) for s in sorted({r.checkpoint_step for r in rs}))
    header += [f"{name} @ step {steps}", f"{name} HNS"]
  rows, data, best, estimates = [], {}, {}, {name: {} for name in names}
  for game in game_names:
    row = [game]
    if game in by_suffix:
      data[game] = Estimate([np.concatenate(list(by_suffix[game].values()))], f"data/{game}")
      row.append(data[game].cell(runs_too=False))
      if show_best:
        k = max(by_suffix[game], key=lambda k: np.mean(by_suffix[game][k]))
        best[game] = Estimate([by_suffix[game][k]], f"best/{game}")
        row.append(f"{best[game].cell(runs_too=False)} [ckpt {k}]")
    else:
      row += ["—"] * (1 + show_best)
    for name, rs in by_method.items():
      per_run = [r.games[game].returns for r in rs if game in r.games and r.games[game].returns]
      if not per_run:
        row += ["—", "—"]
        continue
      estimate = estimates[name][game] = Estimate(per_run, f"{name}/{game}")
      row += [estimate.cell(), _hns(game, estimate.value)]
    rows.append(row)

  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  lines.append("")
  for name in names:
    for what, reference in (("the data's average", data), ("the data's best checkpoint", best)):
      if reference:
        common = [g for g in reference if g in estimates[name]]
        verdicts = {g: _verdict(estimates[name][g], reference[g]) for g in common}
        lines.append(_summary(name, what, verdicts))
  for a, b in itertools.combinations(names, 2):
    common = [g for g in game_names if g in estimates[a] and g in estimates[b]]
    verdicts = {g: _verdict(estimates[a][g], estimates[b][g]) for g in common}
    lines.append(_summary(a, b, verdicts))
  results = [r for rs in by_method.values() for r in rs]
  protocols = {r.protocol_name for r in results}
  lines.append(
    "- Cells: mean [95% bootstrap interval] (runs × episodes per run); a method's value is "
    "the mean of its runs' means. A difference counts when its interval excludes 0 "
    f"({BOOTSTRAP_REPS} resamples of runs, then of each run's episodes)."
  )
  lines.append(
    f"- Evaluation protocol: {', '.join(sorted(protocols))}; epsilon "
    f"{results[0].epsilon}; ALE {results[0].ale_version}."
  )
  return "\n".join(lines)


def main() -> None:
  if not _RUNS.value:
    raise cli.UserError("--runs is required: comma-separated run directories.")
  for run_dir in _RUNS.value:
    if not epath.Path(run_dir).is_dir():
      raise cli.UserError(f"--runs: {run_dir} does not exist.")
  table = compare(_RUNS.value, _DATA_DIR.value, _PROTOCOL.value)
  print(table)
  if _OUTPUT.value:
    epath.Path(_OUTPUT.value).write_text(table + "\n")


if __name__ == "__main__":
  app.run(lambda argv: cli.run_main(main))
