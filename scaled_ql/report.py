r"""Tables and plots from evaluated runs, laid out like the Scaled QL paper's.

    python -m scaled_ql.report --runs=RUN_DIR[,RUN_DIR...] --output=DIR [--protocol=dqn]

Each run directory holds `run_info.json` (written by the trainer) and evaluation results
(`python -m scaled_ql.evaluate --workdir=RUN_DIR`). A directory without run_info.json whose
subdirectories are runs is expanded. The report writes:

- main_table.{md,csv,tex}: rows Scaled QL / DT / BC, columns near-optimal / low-quality data,
  cells IQM [95% CI] and median of human-normalised scores (largest model of each method);
- per_game.{md,csv}; finetune_offline.{md,csv}; finetune_online.{md,csv};
- iqm_ci.png, per_game.png, performance_profile.png, scaling.png (+ scaling.csv);
- report.md: an index with every run used, its protocol and checkpoint, and what was left out.

Nothing is dropped silently: every run or game not in a table is listed with the reason.

This module reads the runs and computes the numbers; `report_tables` lays out the tables and
`report_plots` draws the plots.
"""

import collections
import dataclasses
import json
import os
import re
import sys
from collections.abc import Sequence

import numpy as np
from absl import app, flags

from scaled_ql import evaluate, games, report_plots, report_tables, scores

REFERENCE_FILE = os.path.join(os.path.dirname(__file__), "reference_scores.json")


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
  results: evaluate.EvalResults

  @property
  def group(self) -> tuple[str, str, int | None]:
    return (self.method, self.data_quality, self.num_params)


# ---------------------------------------------------------------------------------------------
# Reading runs.
# ---------------------------------------------------------------------------------------------


def parse_gin_bindings(path: str) -> dict[str, object]:
  """`configurable.param` -> value (a string, or an int) of each binding in a gin file."""
  bindings = {}
  with open(path) as f:
    for line in f:
      m = re.match(r"^\s*([\w./]+\.\w+)\s*=\s*(.+?)\s*(#.*)?$", line)
      if m:
        value = m.group(2).strip("'\"")
        bindings[m.group(1)] = int(value) if value.isdigit() else value
  return bindings


def _data_quality_from_suffixes(suffixes) -> str | None:
  """near_optimal for all suffixes, low_quality for the first 20% (DESIGN.md section 2)."""
  return {"all": "near_optimal", "first20": "low_quality"}.get(suffixes)


def _run_info(workdir: str) -> dict | None:
  """run_info.json, completed from the few operative_config.gin bindings it may lack."""
  info = {}
  gin_path = os.path.join(workdir, "operative_config.gin")
  if os.path.exists(gin_path):
    bindings = parse_gin_bindings(gin_path)
    for key in ("method", "seed", "data_quality", "phase", "init"):
      if f"train.{key}" in bindings:
        info[key] = bindings[f"train.{key}"]
    quality = _data_quality_from_suffixes(bindings.get("ReplayDataset.suffixes"))
    if quality and "data_quality" not in info:
      info["data_quality"] = quality
  info_path = os.path.join(workdir, "run_info.json")
  if os.path.exists(info_path):
    with open(info_path) as f:
      info.update(json.load(f))
  return info or None


def expand_run_dirs(dirs: Sequence[str]) -> list[str]:
  """Run directories; a directory that is not a run but contains runs is expanded one level."""
  out = []
  for d in dirs:
    d = d.rstrip("/")
    is_run = any(
      os.path.exists(os.path.join(d, f)) for f in ("run_info.json", "operative_config.gin")
    )
    subdirs = sorted(os.path.join(d, s) for s in os.listdir(d)) if os.path.isdir(d) else []
    subruns = [s for s in subdirs if os.path.exists(os.path.join(s, "run_info.json"))]
    out.extend(subruns if not is_run and subruns else [d])
  return out


def load_runs(dirs: Sequence[str], protocol: str) -> tuple[list[Run], list[str]]:
  """Loads each run's latest evaluation under `protocol`; returns (runs, left-out notes)."""
  runs, left_out = [], []
  for workdir in expand_run_dirs(dirs):
    if not os.path.isdir(workdir):
      left_out.append(f"run {workdir}: directory does not exist")
      continue
    info = _run_info(workdir)
    if info is None:
      left_out.append(f"run {workdir}: no run_info.json or operative_config.gin (not a run dir)")
      continue
    paths = evaluate.find_results(workdir)
    if not paths:
      left_out.append(
        f"run {workdir}: no evaluation results; run `python -m scaled_ql.evaluate "
        f"--workdir={workdir}`"
      )
      continue
    all_results = [evaluate.read_results(p) for p in paths]
    matching = [r for r in all_results if r.protocol_name == protocol]
    if not matching:
      found = sorted({r.protocol_name for r in all_results})
      left_out.append(
        f"run {workdir}: evaluated only under protocol(s) {found}, not "
        f"'{protocol}'; rerun the evaluation or pass --protocol"
      )
      continue
    results = evaluate.latest(matching)
    missing = [k for k in ("method", "data_quality", "num_params", "seed") if k not in info]
    if missing:
      left_out.append(f"run {workdir}: run_info lacks {missing} (shown as 'unknown')")
    runs.append(
      Run(
        workdir,
        str(info.get("method", "unknown")).lower(),
        str(info.get("data_quality", "unknown")),
        info.get("num_params"),
        info.get("seed"),
        str(info.get("phase", "pretrain")),
        str(
          info.get(
            "init", "scratch" if info.get("phase", "pretrain") == "pretrain" else "pretrained"
          )
        ),
        results,
      )
    )
  return runs, left_out


# ---------------------------------------------------------------------------------------------
# Score matrices.
# ---------------------------------------------------------------------------------------------


def group_matrix(runs: Sequence[Run], left_out: list[str], label: str):
  """Human-normalised [num_runs, num_games] over the games all runs evaluated; notes the rest."""
  game_sets = [set(r.results.games) for r in runs]
  common = set.intersection(*game_sets)
  for game in sorted(set.union(*game_sets) - common):
    left_out.append(f"{label}: game {game} not evaluated by every run of the group")
  no_human = sorted(g for g in common if g not in games.HUMAN_SCORES)
  for game in no_human:
    left_out.append(f"{label}: game {game} has no human score (raw scores in per_game only)")
  names = sorted(common - set(no_human))
  per_run = [
    {g: games.human_normalized_score(g, np.mean(r.results.games[g].returns)) for g in names}
    for r in runs
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
  os.makedirs(output, exist_ok=True)
  runs, left_out = load_runs(run_dirs, protocol)
  if not runs:
    raise ValueError("no evaluated run to report on: " + "; ".join(left_out))
  pretrain = [r for r in runs if r.phase == "pretrain"]

  # -- Aggregates per (method, data quality, size); the seeds of a group are its runs.
  by_group = collections.defaultdict(list)
  for run in pretrain:
    by_group[run.group].append(run)
  matrices, estimates, per_game_hns, per_game_rows = {}, {}, {}, []
  for group, group_runs in sorted(by_group.items(), key=lambda kv: str(kv[0])):
    label = report_tables.group_label(group)
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
          f"{np.std(returns):.1f}",
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
      {report_tables.group_label(g): m for g, m in matrices.items()},
      reps=reps,
      seed=seed,
      task_bootstrap=task_bootstrap,
    )
    estimates = {
      g: {**cis[report_tables.group_label(g)], "_shape": m.shape} for g, m in matrices.items()
    }

  # -- Main table: the largest model of each (method, data quality).
  groups_used = []
  for key in sorted({g[:2] for g in estimates}):
    sizes = sorted((g for g in estimates if g[:2] == key), key=lambda g: g[2] or 0)
    groups_used.append(sizes[-1])
    for g in sizes[:-1]:
      left_out.append(
        f"main table: {report_tables.group_label(g)} not shown (the largest model of "
        f"{key} is); it is in scaling.png and per_game"
      )
  for g in estimates:
    if g[1] not in report_tables.QUALITIES:
      left_out.append(
        f"main table: {report_tables.group_label(g)} has data_quality '{g[1]}', not one of "
        f"{report_tables.QUALITIES}; it is in the plots and per_game only"
      )
  with open(REFERENCE_FILE) as f:
    references = [
      e for e in json.load(f)["entries"] if e["data_quality"] in report_tables.QUALITIES
    ]
  for method in report_tables.METHOD_NAMES:
    for q in report_tables.QUALITIES:
      if not any(g[:2] == (method, q) for g in groups_used):
        left_out.append(
          f"main table: no evaluated {report_tables.METHOD_NAMES[method]} runs on {q} data "
          "(cell shows —)"
        )
  report_tables.main_table(output, estimates, groups_used, references)
  report_tables.write_table(
    os.path.join(output, "per_game"),
    ["Game", "Group", "Runs", "Mean return", "SD over runs", "Human-normalised"],
    per_game_rows,
  )

  # -- Fine-tuning tables.
  for phase in ("offline_finetune", "online_finetune"):
    phase_runs = [r for r in runs if r.phase == phase]
    name = "finetune_" + phase.split("_")[0]
    report_tables.finetune_table(output, name, phase_runs, dqn_reference)
    if not phase_runs:
      left_out.append(f"{name}: no runs with phase '{phase}' (table written empty)")

  # -- Plots (written even when empty, so the set of files is always the same).
  report_plots.plot_intervals(os.path.join(output, "iqm_ci.png"), estimates)
  report_plots.plot_per_game(os.path.join(output, "per_game.png"), per_game_hns)
  report_plots.plot_profiles(os.path.join(output, "performance_profile.png"), matrices, reps, seed)
  report_plots.scaling(output, estimates, left_out)
  _write_index(output, runs, left_out, protocol, task_bootstrap, reps)
  return left_out


def _write_index(output, runs, left_out, protocol, task_bootstrap, reps) -> None:
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
    "performance_profile.png, scaling.png.",
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
  for r in runs:
    res = r.results
    episodes = min(len(g.returns) for g in res.games.values()) if res.games else 0
    lines.append(
      f"| {r.workdir} | {r.method} | {r.data_quality} | {r.num_params} | {r.seed} | "
      f"{r.phase} | {r.init} | {res.checkpoint_step} | {res.protocol_name} | "
      f"{res.ale_version} | {res.epsilon} | {episodes} |"
    )
  with open(REFERENCE_FILE) as f:
    references = json.load(f)["entries"]
  lines += ["", "## Reported numbers shown beside ours", ""]
  lines += [
    f"- {r['label']}: {r['metric'].upper()} {r['value_percent']:g}% ({r['data_quality']}, "
    f"{r['num_games']} games; protocol: {r['protocol']}). Source: {r['source']}."
    for r in references
  ]
  lines += ["", "## Left out", ""] + ([f"- {n}" for n in left_out] or ["Nothing."])
  with open(os.path.join(output, "report.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


FLAGS = flags.FLAGS


def main(argv: Sequence[str]) -> None:
  del argv
  try:
    dqn_reference = None
    if FLAGS.dqn_reference:
      with open(FLAGS.dqn_reference) as f:
        dqn_reference = {k: float(v) for k, v in json.load(f).items() if k != "source"}
    left_out = build_report(FLAGS.runs.split(","), FLAGS.output, protocol=FLAGS.protocol,
                            reps=FLAGS.reps, seed=FLAGS.seed, task_bootstrap=FLAGS.task_bootstrap,
                            dqn_reference=dqn_reference)  # fmt: skip
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"Wrote the report to {FLAGS.output}/report.md")
  for note in left_out:
    print(f"left out: {note}")


if __name__ == "__main__":
  flags.DEFINE_string("runs", None, "Comma-separated run directories (or parents of runs).")
  flags.DEFINE_string("output", None, "Output directory for tables and plots.")
  flags.DEFINE_enum("protocol", "dqn", ["dqn", "mgdt", "custom"], "Which evaluations to use.")
  flags.DEFINE_integer("reps", 2000, "Bootstrap replications.")
  flags.DEFINE_integer("seed", 0, "Bootstrap seed.")
  flags.DEFINE_bool("task_bootstrap", False, "Also resample games in the CIs.")
  flags.DEFINE_string("dqn_reference", "", "JSON {game: DQN score, 'source': ...} for fine-tuning.")
  flags.mark_flags_as_required(["runs", "output"])
  app.run(main)
