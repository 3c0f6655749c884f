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
"""

import collections
import csv
import dataclasses
import json
import os
import re
import sys
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from scaled_ql import evaluate, games, scores  # noqa: E402

METHOD_NAMES = {"scaled_ql": "Scaled QL", "dt": "DT", "bc": "BC"}
QUALITIES = ("near_optimal", "low_quality")
QUALITY_NAMES = {"near_optimal": "Near-optimal", "low_quality": "Low-quality"}
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


def group_label(group) -> str:
  method, quality, num_params = group
  size = f", {num_params / 1e6:.2f}M params" if num_params else ""
  return f"{METHOD_NAMES.get(method, method)} ({quality}{size})"


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
    if quality:
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
    results = max(matching, key=lambda r: -1 if r.checkpoint_step is None else r.checkpoint_step)
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


def _params(num_params: int | None) -> str:
  return f" ({num_params / 1e6:.2f}M)" if num_params else ""


def _fmt(est: scores.Estimate | None, ci: bool = True) -> str:
  if est is None:
    return "—"
  text = f"{100 * est.value:.1f}%"
  return f"{text} [{100 * est.ci_low:.1f}, {100 * est.ci_high:.1f}]" if ci else text


# ---------------------------------------------------------------------------------------------
# Writing tables.
# ---------------------------------------------------------------------------------------------


def write_table(path_stem: str, header: Sequence[str], rows: Sequence[Sequence], latex=False):
  """Writes a table as Markdown, CSV and (optionally) LaTeX."""
  rows = [[str(c) for c in row] for row in rows]
  with open(path_stem + ".md", "w") as f:
    f.write("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
    f.writelines("| " + " | ".join(row) + " |\n" for row in rows)
  with open(path_stem + ".csv", "w", newline="") as f:
    csv.writer(f).writerows([list(header), *rows])
  if latex:
    esc = lambda s: (  # noqa: E731
      s.replace("%", r"\%").replace("_", r"\_").replace("—", "--").replace("±", r"$\pm$")
    )
    with open(path_stem + ".tex", "w") as f:
      f.write("\\begin{tabular}{l" + "c" * (len(header) - 1) + "}\n\\toprule\n")
      f.write(" & ".join(esc(h) for h in header) + " \\\\\n\\midrule\n")
      f.writelines(" & ".join(esc(c) for c in row) + " \\\\\n" for row in rows)
      f.write("\\bottomrule\n\\end{tabular}\n")


def main_table(output, estimates, groups_used, references):
  """Rows: methods; columns: IQM [CI] and median per data quality; reported numbers beside."""
  header = ["Method"]
  for q in QUALITIES:
    header += [
      f"{QUALITY_NAMES[q]} IQM [95% CI]",
      f"{QUALITY_NAMES[q]} median",
      f"{QUALITY_NAMES[q]} runs x games (params)",
    ]
  # The paper's three rows always appear (empty when no run was given), then any others.
  methods = list(METHOD_NAMES) + sorted({g[0] for g in groups_used} - set(METHOD_NAMES))
  rows = []
  for method in methods:
    row = [METHOD_NAMES.get(method, method)]
    for q in QUALITIES:
      group = next((g for g in groups_used if g[:2] == (method, q)), None)
      est = estimates.get(group)
      row += [
        _fmt(est and est["iqm"]),
        _fmt(est and est["median"], ci=False),
        f"{est['_shape'][0]} x {est['_shape'][1]}{_params(group[2])}" if est else "—",
      ]
    rows.append(row)
  for ref in references:
    row = [f"{ref['label']} [{ref['source'].split(',')[0]}]"]
    for q in QUALITIES:
      hit = ref["data_quality"] == q
      row += [
        f"{ref['value_percent']:.0f}%" if hit and ref["metric"] == "iqm" else "—",
        f"{ref['value_percent']:.0f}%" if hit and ref["metric"] == "median" else "—",
        f"{ref['num_games']} games" if hit else "—",
      ]
    rows.append(row)
  write_table(os.path.join(output, "main_table"), header, rows, latex=True)


def finetune_table(output, name, runs, dqn_reference):
  """Rows: game (variant); columns: pretrained vs from scratch, mean return and normalised."""
  cells = collections.defaultdict(list)
  for run in runs:
    for game, r in run.results.games.items():
      cells[(game, run.results.variant, run.init)].append(float(np.mean(r.returns)))
  norm_name = "DQN-normalised" if dqn_reference else "human-normalised"
  header = ["Game", "Variant"]
  for init in ("pretrained", "scratch"):
    header += [f"{init} return (mean ± sd over runs)", f"{init} {norm_name}", f"{init} runs"]
  rows = []
  for game, variant in sorted({k[:2] for k in cells}):
    row = [game, variant]
    for init in ("pretrained", "scratch"):
      vals = cells.get((game, variant, init))
      if not vals:
        row += ["—", "—", 0]
        continue
      mean = float(np.mean(vals))
      if dqn_reference and game in dqn_reference:
        norm = scores.dqn_normalized_scores({game: [mean]}, dqn_reference)[game][0]
      elif game in games.HUMAN_SCORES:
        norm = games.human_normalized_score(game, mean)
      else:
        norm = None
      row += [
        f"{mean:.1f} ± {np.std(vals):.1f}",
        "—" if norm is None else f"{100 * norm:.1f}%",
        len(vals),
      ]
    rows.append(row)
  write_table(os.path.join(output, name), header, rows)
  return len(rows)


# ---------------------------------------------------------------------------------------------
# Plots.
# ---------------------------------------------------------------------------------------------


def plot_intervals(path, estimates):
  labels = [group_label(g) for g in estimates]
  fig, axes = plt.subplots(
    1, len(scores.METRICS), figsize=(4 * len(scores.METRICS), 1 + 0.5 * len(labels))
  )
  for ax, metric in zip(axes, scores.METRICS, strict=True):
    for y, est in enumerate(estimates.values()):
      e = est[metric]
      ax.barh(y, 100 * (e.ci_high - e.ci_low), left=100 * e.ci_low, height=0.6, alpha=0.6)
      ax.plot([100 * e.value] * 2, [y - 0.3, y + 0.3], color="k")
    ax.set_yticks(range(len(labels)), labels if metric == scores.METRICS[0] else [""] * len(labels))
    ax.set_title(metric.replace("_", " ").upper() if metric == "iqm" else metric.replace("_", " "))
    ax.set_xlabel("human-normalised score (%)")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_per_game(path, per_game_hns):
  game_names = sorted({g for d in per_game_hns.values() for g in d})
  fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(game_names) * max(1, len(per_game_hns))), 4))
  width = 0.8 / max(1, len(per_game_hns))
  for k, (group, by_game) in enumerate(per_game_hns.items()):
    xs = np.arange(len(game_names)) + k * width
    ax.bar(xs, [100 * by_game.get(g, np.nan) for g in game_names], width, label=group_label(group))
  ax.set_xticks(np.arange(len(game_names)) + 0.4 - width / 2, game_names, rotation=60, ha="right")
  ax.set_ylabel("human-normalised score (%)")
  ax.axhline(100, color="gray", lw=0.5, ls="--")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_profiles(path, matrices, reps, seed):
  taus = np.linspace(-0.5, 2.5, 61)
  profiles, cis = {}, {}
  if matrices:
    profiles, cis = scores.performance_profiles(
      {group_label(g): m for g, m in matrices.items()}, taus, reps=reps, seed=seed
    )
  fig, ax = plt.subplots(figsize=(6, 4))
  for label, profile in profiles.items():
    ax.plot(100 * taus, profile, label=label)
    ax.fill_between(100 * taus, cis[label][0], cis[label][1], alpha=0.2)
  ax.set_xlabel("human-normalised score threshold tau (%)")
  ax.set_ylabel("fraction of runs x games with score > tau")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def scaling(output, estimates, left_out):
  """IQM vs parameters per (method, data quality), with a power-law fit where possible."""
  series = collections.defaultdict(list)
  for group, est in estimates.items():
    if group[2]:
      series[group[:2]].append((group[2], est["iqm"]))
  fig, ax = plt.subplots(figsize=(6, 4))
  rows = []
  for (method, quality), points in sorted(series.items()):
    points.sort(key=lambda p: p[0])
    n = np.array([p[0] for p in points], np.float64)
    iqm = np.array([p[1].value for p in points])
    err = np.array([[p[1].value - p[1].ci_low, p[1].ci_high - p[1].value] for p in points]).T
    label = f"{METHOD_NAMES.get(method, method)} ({quality})"
    bars = ax.errorbar(n, 100 * iqm, yerr=100 * err, fmt="o", capsize=3, label=label)
    positive = iqm > 0
    if len(np.unique(n[positive])) < 2:
      left_out.append(
        f"scaling fit {label}: needs >= 2 model sizes with IQM > 0, have "
        f"{int(positive.sum())} of {len(n)} sizes"
      )
      rows.append([method, quality, len(n), "—", "—", "—"])
      continue
    fit = scores.fit_power_law(n[positive], iqm[positive])
    grid = np.geomspace(n.min(), n.max(), 50)
    ax.plot(
      grid,
      100 * fit.coefficient * grid**fit.exponent,
      color=bars[0].get_color(),
      ls="--",
      label=f"{label} fit: exponent {fit.exponent:.3f}",
    )
    rows.append(
      [
        method,
        quality,
        fit.num_points,
        f"{fit.exponent:.4f}",
        f"{fit.coefficient:.4g}",
        f"{fit.r_squared:.3f}",
      ]
    )
  ax.set_xscale("log")
  if series and all(p[1].ci_low > 0 for points in series.values() for p in points):
    ax.set_yscale("log")  # A power law is a straight line in log-log axes.
  ax.set_xlabel("parameters")
  ax.set_ylabel("IQM human-normalised score (%)")
  ax.set_title("score = a * params^b (fit on IQM > 0)")
  if series:
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(output, "scaling.png"), dpi=100)
  plt.close(fig)
  with open(os.path.join(output, "scaling.csv"), "w", newline="") as f:
    csv.writer(f).writerows(
      [["method", "data_quality", "num_sizes", "exponent", "coefficient", "r_squared"], *rows]
    )


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
    label = group_label(group)
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
      {group_label(g): m for g, m in matrices.items()},
      reps=reps,
      seed=seed,
      task_bootstrap=task_bootstrap,
    )
    estimates = {g: {**cis[group_label(g)], "_shape": m.shape} for g, m in matrices.items()}

  # -- Main table: the largest model of each (method, data quality).
  groups_used = []
  for key in sorted({g[:2] for g in estimates}):
    sizes = sorted((g for g in estimates if g[:2] == key), key=lambda g: g[2] or 0)
    groups_used.append(sizes[-1])
    for g in sizes[:-1]:
      left_out.append(
        f"main table: {group_label(g)} not shown (the largest model of "
        f"{key} is); it is in scaling.png and per_game"
      )
  for g in estimates:
    if g[1] not in QUALITIES:
      left_out.append(
        f"main table: {group_label(g)} has data_quality '{g[1]}', not one of "
        f"{QUALITIES}; it is in the plots and per_game only"
      )
  with open(REFERENCE_FILE) as f:
    references = [e for e in json.load(f)["entries"] if e["data_quality"] in QUALITIES]
  for method in METHOD_NAMES:
    for q in QUALITIES:
      if not any(g[:2] == (method, q) for g in groups_used):
        left_out.append(
          f"main table: no evaluated {METHOD_NAMES[method]} runs on {q} data (cell shows —)"
        )
  main_table(output, estimates, groups_used, references)
  write_table(
    os.path.join(output, "per_game"),
    ["Game", "Group", "Runs", "Mean return", "SD over runs", "Human-normalised"],
    per_game_rows,
  )

  # -- Fine-tuning tables.
  for phase in ("offline_finetune", "online_finetune"):
    phase_runs = [r for r in runs if r.phase == phase]
    name = "finetune_" + phase.split("_")[0]
    finetune_table(output, name, phase_runs, dqn_reference)
    if not phase_runs:
      left_out.append(f"{name}: no runs with phase '{phase}' (table written empty)")

  # -- Plots (written even when empty, so the set of files is always the same).
  plot_intervals(os.path.join(output, "iqm_ci.png"), estimates)
  plot_per_game(os.path.join(output, "per_game.png"), per_game_hns)
  plot_profiles(os.path.join(output, "performance_profile.png"), matrices, reps, seed)
  scaling(output, estimates, left_out)
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
