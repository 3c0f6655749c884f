r"""Reads evaluated runs and computes every number of the report; writes its files.

The command line is `python -m scaled_ql.report` (`__main__`). Each run directory holds
`run_info.json` (written by the trainer) and evaluation results (`python -m scaled_ql.evaluate
--workdir=RUN_DIR`), both read through `scaled_ql.runs`: local paths or bucket URIs (`gs://...`).
A directory that is not a run but whose subdirectories are runs is expanded. The report writes,
to a local directory (copy it to a bucket afterwards if needed):

- main_table.{md,csv,tex}: rows Scaled QL / DT / BC, columns near-optimal / low-quality data,
  cells IQM [95% CI] and median of human-normalised scores (largest model of each method);
- per_game.{md,csv}; finetune_offline.{md,csv}; finetune_online.{md,csv};
- iqm_ci.png, per_game.png, performance_profile.png, scaling.png (+ scaling.csv);
- finetune_curves.png: return vs environment steps (online) or gradient steps (offline),
  pretrained vs scratch, mean over seeds with their range;
- report.md: an index with every run used, its protocol and checkpoint, and what was left out.

Nothing is dropped silently: every run or game not in a table is listed with the reason.
`tables` lays out the tables and `plots` draws the plots.
"""

import collections
import dataclasses
import importlib.resources
import json
import os
from collections.abc import Sequence

import numpy as np
from etils import epath

from scaled_ql import games, runs
from scaled_ql.report import plots, scores, tables

REFERENCE_FILE = "reference_scores.json"  # Package data of scaled_ql: reported numbers.


@dataclasses.dataclass
class Run:
  """One evaluated run and what it is."""

  workdir: str
  method: str
  data_quality: str
  num_params: int | None
  seed: int | None
  phase: str  # pretrain | offline_finetune | online_finetune
  init: str  # pretrained | scratch
  results: runs.EvalResults

  @property
  def group(self) -> tuple[str, str, int | None]:
    return (self.method, self.data_quality, self.num_params)


# ---------------------------------------------------------------------------------------------
# Reading runs.
# ---------------------------------------------------------------------------------------------


def expand_run_dirs(dirs: Sequence[str]) -> list[str]:
  """Run directories; a directory that is not a run but contains runs is expanded one level."""
  out = []
  for d in dirs:
    d = d.rstrip("/")
    path = epath.Path(d)
    subdirs = sorted(os.path.join(d, s.name) for s in path.iterdir()) if path.is_dir() else []
    subruns = [s for s in subdirs if runs.is_run(s)]
    out.extend(subruns if not runs.is_run(d) and subruns else [d])
  return out


def load_runs(dirs: Sequence[str], protocol: str) -> tuple[list[Run], list[str]]:
  """Loads each run's latest evaluation under `protocol`; returns (runs, left-out notes)."""
  loaded, left_out = [], []
  for workdir in expand_run_dirs(dirs):
    if not epath.Path(workdir).is_dir():
      left_out.append(f"run {workdir}: directory does not exist")
      continue
    if not runs.is_run(workdir):
      left_out.append(f"run {workdir}: no {runs.RUN_INFO_FILE} (not a run directory)")
      continue
    info = runs.read_run_info(workdir)
    all_results = runs.read_all_results(workdir)
    if not all_results:
      left_out.append(
        f"run {workdir}: no evaluation results; run `python -m scaled_ql.evaluate "
        f"--workdir={workdir}`"
      )
      continue
    matching = [r for r in all_results if r.protocol_name == protocol]
    if not matching:
      found = sorted({r.protocol_name for r in all_results})
      left_out.append(
        f"run {workdir}: evaluated only under protocol(s) {found}, not "
        f"'{protocol}'; rerun the evaluation or pass --protocol"
      )
      continue
    missing = [k for k in ("method", "data_quality", "num_params", "seed") if k not in info]
    if missing:
      left_out.append(f"run {workdir}: run_info lacks {missing} (shown as 'unknown')")
    phase = str(info.get("phase", "pretrain"))
    default_init = "scratch" if phase == "pretrain" else "pretrained"
    loaded.append(
      Run(
        workdir,
        method=str(info.get("method", "unknown")).lower(),
        data_quality=str(info.get("data_quality", "unknown")),
        num_params=info.get("num_params"),
        seed=info.get("seed"),
        phase=phase,
        init=str(info.get("init", default_init)),
        results=runs.latest(matching),
      )
    )
  return loaded, left_out


def finetune_curves(phase_runs: Sequence[Run], left_out: list[str]) -> dict:
  """Learning curves of fine-tuning runs, from their metrics.jsonl.

  Online: the mean return of the training episodes of each log window against environment
  steps; offline: the evaluation return against gradient steps, from the trainer's periodic
  evaluations (under the run's own protocol, whatever `--protocol` selects for the tables).

  Returns:
    {plots.CurvePanel: {init: [(x [n], y [n]) per run]}}, init 'pretrained' or 'scratch'.
  """
  curves = collections.defaultdict(lambda: collections.defaultdict(list))
  for run in phase_runs:
    game, variant = next(iter(run.results.games)), run.results.variant
    online = run.phase == "online_finetune"
    y_key = "online/episode_return" if online else f"eval/{game}/return"
    rows = [row for row in runs.read_metrics(run.workdir) if y_key in row]
    if not rows:
      left_out.append(f"curves: run {run.workdir} logged no {y_key}")
      continue
    xs = [row["online/env_steps"] if online else row["step"] for row in rows]
    panel = plots.CurvePanel(
      f"{game} v{variant} (online)" if online else f"{game} (offline)",
      "environment steps" if online else "gradient steps",
      "training episodes' return" if online else "evaluation return",
      smooth=online,
    )
    curves[panel][run.init].append((np.asarray(xs, float), np.asarray([r[y_key] for r in rows])))
  return {panel: dict(by_init) for panel, by_init in curves.items()}


def reference_entries() -> list[dict]:
  """The published numbers shown beside ours (`scaled_ql/reference_scores.json`)."""
  text = importlib.resources.files("scaled_ql").joinpath(REFERENCE_FILE).read_text()
  return json.loads(text)["entries"]


# ---------------------------------------------------------------------------------------------
# Score matrices.
# ---------------------------------------------------------------------------------------------


def group_matrix(group_runs: Sequence[Run], left_out: list[str], label: str):
  """Human-normalised [num_runs, num_games] over the games all runs evaluated; notes the rest."""
  game_sets = [set(r.results.games) for r in group_runs]
  common = set.intersection(*game_sets)
  for game in sorted(set.union(*game_sets) - common):
    left_out.append(f"{label}: game {game} not evaluated by every run of the group")
  no_human = sorted(g for g in common if g not in games.HUMAN_SCORES)
  for game in no_human:
    left_out.append(f"{label}: game {game} has no human score (raw scores in per_game only)")
  names = sorted(common - set(no_human))
  per_run = [
    {g: games.human_normalized_score(g, np.mean(r.results.games[g].returns)) for g in names}
    for r in group_runs
  ]
  return (scores.score_matrix(per_run, names) if names else None), names


# ---------------------------------------------------------------------------------------------
# The report.
# ---------------------------------------------------------------------------------------------


def build_report(
  run_dirs: Sequence[str],
  output: str,
  *,
  protocol: str = "dqn",
  reps: int = 2000,
  seed: int = 0,
  task_bootstrap: bool = False,
  dqn_reference: dict[str, float] | None = None,
) -> list[str]:
  """Writes every table and plot for `run_dirs` into `output`.

  Args:
    run_dirs: run directories (or directories of runs).
    output: where to write; created if needed.
    protocol: use evaluations made under this protocol ('dqn', 'mgdt' or 'custom').
    reps: bootstrap replications for the CIs.
    seed: bootstrap seed.
    task_bootstrap: also resample games in the CIs (wider; needed for single-seed groups).
    dqn_reference: game -> DQN reference score for DQN-normalised fine-tuning tables.

  Returns:
    The "left out" notes (also written to report.md).
  """
  if runs.is_uri(output):
    raise ValueError(f"--output={output}: the report is written to a local directory; copy it "
                     "to the bucket afterwards (e.g. `gsutil -m cp -r`).")  # fmt: skip
  os.makedirs(output, exist_ok=True)
  loaded, left_out = load_runs(run_dirs, protocol)
  if not loaded:
    raise ValueError("no evaluated run to report on: " + "; ".join(left_out))
  pretrain = [r for r in loaded if r.phase == "pretrain"]

  # -- Aggregates per (method, data quality, size); the seeds of a group are its runs.
  by_group = collections.defaultdict(list)
  for run in pretrain:
    by_group[run.group].append(run)
  matrices, estimates, per_game_hns, per_game_rows = {}, {}, {}, []
  for group, group_runs in sorted(by_group.items(), key=lambda kv: str(kv[0])):
    label = tables.group_label(group)
    matrix, names = group_matrix(group_runs, left_out, label)
    for game in sorted({g for r in group_runs for g in r.results.games}):
      returns = [
        np.mean(r.results.games[game].returns) for r in group_runs if game in r.results.games
      ]
      hns = (
        games.human_normalized_score(game, np.mean(returns)) if game in games.HUMAN_SCORES else None
      )
      per_game_rows.append(
        [
          game,
          label,
          len(returns),
          f"{np.mean(returns):.1f}",
          f"{np.std(returns, ddof=1):.1f}" if len(returns) > 1 else "—",
          "—" if hns is None else f"{100 * hns:.1f}%",
        ]
      )
    if matrix is None:
      left_out.append(f"{label}: no game with a human score in common; not aggregated")
      continue
    matrices[group] = matrix
    per_game_hns[group] = dict(zip(names, matrix.mean(axis=0), strict=True))
  if matrices:
    cis = scores.aggregate_with_cis(
      {tables.group_label(g): m for g, m in matrices.items()},
      reps=reps,
      seed=seed,
      task_bootstrap=task_bootstrap,
    )
    estimates = {g: {**cis[tables.group_label(g)], "_shape": m.shape} for g, m in matrices.items()}

  # -- Main table: the largest model of each (method, data quality).
  groups_used = []
  for key in sorted({g[:2] for g in estimates}):
    sizes = sorted((g for g in estimates if g[:2] == key), key=lambda g: g[2] or 0)
    groups_used.append(sizes[-1])
    for g in sizes[:-1]:
      left_out.append(
        f"main table: {tables.group_label(g)} not shown (the largest model of "
        f"{key} is); it is in scaling.png and per_game"
      )
  for g in estimates:
    if g[1] not in tables.QUALITIES:
      left_out.append(
        f"main table: {tables.group_label(g)} has data_quality '{g[1]}', not one of "
        f"{tables.QUALITIES}; it is in the plots and per_game only"
      )
  references = [e for e in reference_entries() if e["data_quality"] in tables.QUALITIES]
  for method in tables.PAPER_METHODS:
    for q in tables.QUALITIES:
      if not any(g[:2] == (method, q) for g in groups_used):
        left_out.append(
          f"main table: no evaluated {tables.METHOD_NAMES[method]} runs on {q} data (cell shows —)"
        )
  tables.main_table(output, estimates, groups_used, references)
  tables.write_table(
    os.path.join(output, "per_game"),
    ["Game", "Group", "Runs", "Mean return", "SD over runs", "Human-normalised"],
    per_game_rows,
  )

  # -- Fine-tuning tables and learning curves.
  curves = {}
  for phase in ("offline_finetune", "online_finetune"):
    phase_runs = [r for r in loaded if r.phase == phase]
    name = "finetune_" + phase.split("_")[0]
    tables.finetune_table(output, name, phase_runs, dqn_reference)
    if not phase_runs:
      left_out.append(f"{name}: no runs with phase '{phase}' (table written empty)")
    curves.update(finetune_curves(phase_runs, left_out))

  # -- Plots (written even when empty, so the set of files is always the same).
  plots.plot_intervals(os.path.join(output, "iqm_ci.png"), estimates)
  plots.plot_per_game(os.path.join(output, "per_game.png"), per_game_hns)
  plots.plot_profiles(os.path.join(output, "performance_profile.png"), matrices, reps, seed)
  plots.scaling(output, estimates, matrices, left_out, reps, seed)
  plots.plot_learning_curves(os.path.join(output, "finetune_curves.png"), curves)
  _write_index(output, loaded, left_out, protocol, task_bootstrap, reps)
  return left_out


def _write_index(output, loaded, left_out, protocol, task_bootstrap, reps) -> None:
  lines = [
    "# scaled_ql report",
    "",
    f"Human-normalised scores (dqn_zoo random/human tables), protocol '{protocol}'. IQM is pooled "
    f"over runs x games; CIs are 95% percentile stratified-bootstrap intervals over runs "
    f"({'and games, ' if task_bootstrap else ''}{reps} reps, rliable). A group with one run has "
    "a zero-width CI unless --task_bootstrap is set.",
    "",
    "Tables: main_table.{md,csv,tex}, per_game.{md,csv}, finetune_offline.{md,csv}, "
    "finetune_online.{md,csv}, scaling.csv. Plots: iqm_ci.png, per_game.png, "
    "performance_profile.png, scaling.png, finetune_curves.png.",
    "",
    "## Main table",
    "",
  ]
  with open(os.path.join(output, "main_table.md")) as f:
    lines += [
      f.read(),
      "## Runs",
      "",
      "| Run | Method | Data | Params | Seed | Phase | Init | Step | Protocol | ALE | "
      "Epsilon | Episodes/game |",
      "|" + "---|" * 12,
    ]
  for r in loaded:
    res = r.results
    episodes = min(len(g.returns) for g in res.games.values()) if res.games else 0
    lines.append(
      f"| {r.workdir} | {r.method} | {r.data_quality} | {r.num_params} | {r.seed} | "
      f"{r.phase} | {r.init} | {res.checkpoint_step} | {res.protocol_name} | "
      f"{res.ale_version} | {res.epsilon} | {episodes} |"
    )
  lines += ["", "## Reported numbers shown beside ours", ""]
  lines += [
    f"- {r['label']}: {r['metric'].upper()} {r['value_percent']:g}% ({r['data_quality']}, "
    f"{r['num_games']} games; protocol: {r['protocol']}). Source: {r['source']}."
    for r in reference_entries()
  ]
  lines += ["", "## Left out", ""] + ([f"- {n}" for n in left_out] or ["Nothing."])
  with open(os.path.join(output, "report.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
