"""Table layout for the report: method/data-quality names and the Markdown/CSV/LaTeX writers.

`build` gathers the numbers; this module only lays them out, as in the paper.
"""

import collections
import csv
import os
from collections.abc import Sequence

import numpy as np

from scaled_ql import games
from scaled_ql.report import scores

# The paper's main table's rows, which always appear (empty when no run was given).
PAPER_METHODS = ("scaled_ql", "dt", "bc")
METHOD_NAMES = {
  "scaled_ql": "Scaled QL",
  "dt": "DT",
  "dt_argmax": "DT (argmax action)",
  "bc": "BC",
  "sampled_bc": "BC (sampled action)",
  "filtered_bc": "Filtered BC (%BC, best 10% of rows)",
  "q_guided_bc": "Q-guided BC (best of k under Scaled QL's Q)",
  "q_guided_dt": "Q-guided DT (best of k under Scaled QL's Q)",
  # The ablations' arms (gin/ablations/fragments/, launch/ablations.sh).
  "scaled_ql_no_cql": "Scaled QL without CQL",
  "scaled_ql_mse": "Scaled QL with MSE (no C51)",
  "scaled_ql_no_feature_norm": "Scaled QL without feature normalization",
  "scaled_ql_no_spatial_embedding": "Scaled QL without the spatial embedding",
  **{
    f"scaled_ql_cql_alpha_{alpha.replace('.', '_')}": f"Scaled QL, CQL alpha {alpha}"
    for alpha in ("0.01", "0.1", "0.5", "1.0")
  },
}
QUALITIES = ("near_optimal", "low_quality")
QUALITY_NAMES = {"near_optimal": "Near-optimal", "low_quality": "Low-quality"}


def group_label(group) -> str:
  method, quality, num_params = group
  size = f", {num_params / 1e6:.2f}M params" if num_params else ""
  return f"{METHOD_NAMES.get(method, method)} ({quality}{size})"


def _params(num_params: int | None) -> str:
  return f" ({num_params / 1e6:.2f}M)" if num_params else ""


def _fmt(est: scores.Estimate | None, ci: bool = True) -> str:
  if est is None:
    return "—"
  text = f"{100 * est.value:.1f}%"
  return f"{text} [{100 * est.ci_low:.1f}, {100 * est.ci_high:.1f}]" if ci else text


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
  others = {g[0] for g in groups_used} - set(PAPER_METHODS)
  order = {m: i for i, m in enumerate(METHOD_NAMES)}
  methods = list(PAPER_METHODS) + sorted(others, key=lambda m: (order.get(m, len(order)), m))
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
        f"{mean:.1f} ± {np.std(vals, ddof=1):.1f}" if len(vals) > 1 else f"{mean:.1f} ± —",
        "—" if norm is None else f"{100 * norm:.1f}%",
        len(vals),
      ]
    rows.append(row)
  write_table(os.path.join(output, name), header, rows)
  return len(rows)
