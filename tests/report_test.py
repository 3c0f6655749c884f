"""Tests for scaled_ql.report: the report and the comparison, built from run directories.

The runs are written through `scaled_ql.runs` (run_info.json, results.json) with returns chosen
so that the numbers can be checked by hand: Breakout's random/human scores are 1.7/30.5 and
Pong's -20.7/14.6 (dqn_zoo's tables), so the run "sql" has human-normalised scores 0.5 and 1.0
and the run "bc" 0.0 and 0.0.
"""

import csv
import dataclasses
import json
import os
import subprocess
import sys

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest

from scaled_ql import games, runs
from scaled_ql.report import build, compare, plots, scores, tables

_PNGS = ["iqm_ci.png", "per_game.png", "performance_profile.png", "scaling.png",
         "finetune_curves.png"]  # fmt: skip
_TABLES = [
  "main_table.md", "main_table.csv", "main_table.tex", "per_game.md", "per_game.csv",
  "finetune_offline.md", "finetune_offline.csv", "finetune_online.md", "finetune_online.csv",
  "scaling.csv", "report.md",
]  # fmt: skip
_SQL_RETURNS = {"Breakout": [1.7, 30.5], "Pong": [14.6, 14.6]}  # Human-normalised 0.5 and 1.0.
_BC_RETURNS = {"Breakout": [1.7, 1.7], "Pong": [-20.7, -20.7]}  # Human-normalised 0.0 and 0.0.


def _results(game_returns, *, protocol_name="custom"):
  """An evaluation with the given per-game episode returns (10 steps each, none truncated)."""
  per_game = {
    game: runs.GameResult(k, games.num_actions(game), list(r), [10] * len(r), [False] * len(r))
    for k, (game, r) in enumerate(sorted(game_returns.items()))
  }
  protocol = {"max_episode_steps": 60} if protocol_name == "custom" else {}
  return runs.EvalResults(per_game, protocol, protocol_name, 0.001, 0, 0, 1, 40, 1.0)


def _write_results(workdir, game_returns, *, checkpoint_step=10, protocol_name="custom"):
  """One evaluation of the run, as `python -m scaled_ql.evaluate` files it."""
  results = _results(game_returns, protocol_name=protocol_name)
  runs.write_results(workdir, results, checkpoint_step=checkpoint_step)


def _write_run(workdir, game_returns, **info):
  """A run directory as the trainer and evaluation leave it: run_info.json and results.json."""
  os.makedirs(workdir, exist_ok=True)
  runs.write_run_info(workdir, dict(info, game_names=sorted(game_returns)), "# operative\n")
  _write_results(workdir, game_returns)


def _pretrain_info(method, seed=0):
  return dict(method=method, phase="pretrain", init="scratch", seed=seed, num_params=1_500_000,
              data_quality="near_optimal")  # fmt: skip


@pytest.fixture(scope="module")
def run_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("runs")
  _write_run(str(root / "sql"), _SQL_RETURNS, **_pretrain_info("scaled_ql"))
  # An earlier checkpoint's evaluation: the report and compare use the latest one.
  _write_results(str(root / "sql"), {"Breakout": [0.0], "Pong": [0.0]}, checkpoint_step=5)
  _write_run(str(root / "bc"), _BC_RETURNS, **_pretrain_info("bc", seed=1))
  for init, pong in (("pretrained", [0.0, 2.0]), ("scratch", [-20.7, -20.7])):
    _write_run(str(root / f"ft_{init}"), {"Pong": pong}, method="scaled_ql",
               phase="offline_finetune", init=init, seed=0, num_params=1000,
               data_quality="near_optimal")  # fmt: skip
  os.makedirs(root / "not_a_run")
  os.makedirs(root / "never_evaluated")
  runs.write_run_info(str(root / "never_evaluated"), _pretrain_info("dt"), "")
  return root


@pytest.fixture(scope="module")
def report_dir(run_root):
  root = run_root
  out = str(root / "report")
  run_dirs = [str(root / d) for d in ("sql", "bc", "ft_pretrained", "ft_scratch", "not_a_run")]
  left_out = build.build_report(run_dirs + [str(root / "never_evaluated")], out,
                                protocol="custom", reps=200)  # fmt: skip
  return out, left_out, root


def test_report_contains_every_table_and_valid_plots(report_dir):
  out, _, _ = report_dir
  for name in _TABLES + _PNGS:
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  for name in _PNGS:
    with open(os.path.join(out, name), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
    image = matplotlib.image.imread(os.path.join(out, name))
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, name


def test_main_table_layout_and_numbers(report_dir):
  out, _, _ = report_dir
  with open(os.path.join(out, "main_table.csv")) as f:
    rows = list(csv.reader(f))
  assert rows[0][:4] == [
    "Method", "Near-optimal IQM [95% CI]", "Near-optimal median", "Near-optimal runs x games (params)"
  ]  # fmt: skip
  assert [r[0] for r in rows[1:4]] == ["Scaled QL", "DT", "BC"]
  # One run: the CI is the point. IQM of two entries [0.5, 1.0] trims none: 0.75.
  assert rows[1][1:4] == ["75.0% [75.0, 75.0]", "75.0%", "1 x 2 (1.50M)"]
  assert rows[2][1] == "—"  # The DT run was never evaluated.
  assert rows[3][1:3] == ["0.0% [0.0, 0.0]", "0.0%"]
  assert any(r[0].startswith("DT-200M (reported)") and r[1] == "126%" for r in rows)
  with open(os.path.join(out, "main_table.tex")) as f:
    tex = f.read()
  assert "\\begin{tabular}" in tex and "Scaled QL" in tex and "\\%" in tex


def test_per_game_and_finetune_tables(report_dir):
  out, _, _ = report_dir
  with open(os.path.join(out, "per_game.csv")) as f:
    per_game = {(r["Game"], r["Group"].split(" ")[0]): r for r in csv.DictReader(f)}
  assert set(per_game) == {("Breakout", "Scaled"), ("Pong", "Scaled"), ("Breakout", "BC"),
                           ("Pong", "BC")}  # fmt: skip
  assert per_game[("Breakout", "Scaled")]["Mean return"] == "16.1"
  assert per_game[("Breakout", "Scaled")]["Human-normalised"] == "50.0%"
  with open(os.path.join(out, "finetune_offline.csv")) as f:
    finetune = list(csv.DictReader(f))
  assert len(finetune) == 1 and finetune[0]["Game"] == "Pong"
  assert finetune[0]["pretrained runs"] == "1" and finetune[0]["scratch runs"] == "1"


def test_nothing_is_dropped_silently(report_dir):
  out, left_out, root = report_dir
  text = "\n".join(left_out)
  assert f"run {root / 'not_a_run'}: no run_info.json (not a run directory)" in text
  assert f"run {root / 'never_evaluated'}: no evaluation results" in text
  assert "python -m scaled_ql.evaluate" in text
  assert "finetune_online: no runs" in text
  assert "scaling fit" in text  # One model size per method: no power law, and it says so.
  with open(os.path.join(out, "report.md")) as f:
    index = f.read()
  assert "## Left out" in index and "never_evaluated" in index
  assert index.count("| custom |") == 4  # The four evaluated runs, with their protocol.
  assert "| scaled_ql | near_optimal | 1500000 | 0 | pretrain | scratch | 10 | custom |" in index


def test_a_directory_without_run_info_is_left_out_with_its_reason(tmp_path):
  # Evaluated, with an operative config that names the method, but no run_info.json: not a run.
  no_info = str(tmp_path / "no_info")
  os.makedirs(no_info)
  with open(os.path.join(no_info, "operative_config.gin"), "w") as f:
    f.write("train.method = 'bc'\ntrain.seed = 3\n")
  runs.write_results(no_info, _results(_BC_RETURNS), checkpoint_step=10)
  # A run whose run_info.json lacks data_quality and num_params: kept, shown as unknown.
  partial = str(tmp_path / "partial")
  _write_run(partial, _BC_RETURNS, method="BC", phase="pretrain", init="scratch", seed=2)
  loaded, left_out = build.load_runs([no_info, partial], "custom")
  assert left_out == [
    f"run {no_info}: no run_info.json (not a run directory)",
    f"run {partial}: run_info lacks ['data_quality', 'num_params'] (shown as 'unknown')",
  ]
  assert [(r.workdir, r.method, r.data_quality, r.num_params, r.seed) for r in loaded] == [
    (partial, "bc", "unknown", None, 2)
  ]
  # Its parent is not a run either, and holds one run: it expands to that run alone.
  assert build.expand_run_dirs([str(tmp_path)]) == [partial]


def test_latest_evaluation_under_the_protocol_is_used(tmp_path):
  workdir = str(tmp_path / "run")
  _write_run(workdir, _SQL_RETURNS, **_pretrain_info("scaled_ql"))
  _write_results(workdir, _BC_RETURNS, checkpoint_step=20, protocol_name="dqn")
  (custom,), _ = build.load_runs([workdir], "custom")
  (dqn,), _ = build.load_runs([workdir], "dqn")
  assert (custom.results.checkpoint_step, dqn.results.checkpoint_step) == (10, 20)
  loaded, left_out = build.load_runs([workdir], "mgdt")
  assert loaded == [] and "evaluated only under protocol(s) ['custom', 'dqn']" in left_out[0]


def test_scaling_fit_is_written(tmp_path):
  estimates = {
    ("scaled_ql", "near_optimal", n): {"iqm": scores.Estimate(v, v - 0.05, v + 0.05)}
    for n, v in [(1e6, 0.5), (1e7, 0.5 * 10**0.2), (1e8, 0.5 * 100**0.2)]
  }
  left_out = []
  plots.scaling(str(tmp_path), estimates, left_out)
  with open(tmp_path / "scaling.csv") as f:
    row = list(csv.DictReader(f))[0]
  assert float(row["exponent"]) == pytest.approx(0.2, abs=1e-4)
  assert left_out == []
  assert matplotlib.image.imread(str(tmp_path / "scaling.png")).ndim == 3


def test_interval_plot_marks_every_point_estimate_inside_the_axes():
  # A single run at 0%: a zero-width interval whose line would sit on the left spine.
  estimates = {
    ("bc", "near_optimal", 10): {m: scores.Estimate(0.0, 0.0, 0.0) for m in scores.METRICS},
    ("scaled_ql", "near_optimal", 10): {m: scores.Estimate(0.75, 0.5, 1.0) for m in scores.METRICS},
  }
  fig = plots.intervals_figure(estimates)
  try:
    for ax in fig.axes:
      dots = [
        (float(line.get_xdata()[0]), float(line.get_ydata()[0]))
        for line in ax.get_lines()
        if line.get_marker() == "o"
      ]
      assert dots == [(0.0, 0.0), (75.0, 1.0)]
      low, high = ax.get_xlim()
      assert low < 0.0 and high > 75.0
  finally:
    plt.close(fig)


def test_games_without_human_score_or_not_in_every_run_are_listed():
  def run(game_returns):
    return build.Run("w", "bc", "near_optimal", 10, 0, "pretrain", "scratch",
                     _results(game_returns, protocol_name="dqn"))  # fmt: skip

  left_out = []
  matrix, names = build.group_matrix(
    [run({"Breakout": [30.5], "Carnival": [100.0], "Pong": [14.6]}),
     run({"Breakout": [1.7], "Carnival": [50.0]})], left_out, "BC")  # fmt: skip
  assert names == ["Breakout"]
  np.testing.assert_allclose(matrix, [[1.0], [0.0]])
  assert left_out == [
    "BC: game Pong not evaluated by every run of the group",
    "BC: game Carnival has no human score (raw scores in per_game only)",
  ]


def test_cli_fails_clearly_without_evaluated_runs(tmp_path):
  proc = subprocess.run(
    [sys.executable, "-m", "scaled_ql.report", f"--runs={tmp_path}/a,{tmp_path}",
     f"--output={tmp_path}/out"],
    capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  message = proc.stderr.strip().splitlines()[-1]
  assert "no evaluated run" in message and f"{tmp_path}/a: directory does not exist" in message


def test_cli_writes_the_report(run_root, tmp_path):
  proc = subprocess.run(
    [sys.executable, "-m", "scaled_ql.report", f"--runs={run_root / 'sql'}",
     f"--output={tmp_path}", "--protocol=custom", "--reps=50"],
    capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert proc.returncode == 0, proc.stderr
  assert f"Wrote the report to {tmp_path}/report.md" in proc.stdout
  with open(tmp_path / "main_table.csv") as f:
    assert list(csv.reader(f))[1][1] == "75.0% [75.0, 75.0]"


def _write_online_run(workdir, init, seed, returns_by_window):
  """An online fine-tuning run on Breakout variant 1 with its logged training episodes."""
  os.makedirs(workdir)
  info = dict(method="scaled_ql", phase="online_finetune", init=init, seed=seed, num_params=10,
              data_quality="online", game_names=["Breakout"])  # fmt: skip
  runs.write_run_info(workdir, info, "")
  results = dataclasses.replace(_results({"Breakout": [returns_by_window[-1]]}), variant=1)
  runs.write_results(workdir, results, checkpoint_step=len(returns_by_window))
  with open(os.path.join(workdir, runs.METRICS_FILE), "w") as f:
    for k, value in enumerate(returns_by_window):
      row = {"step": 10 * (k + 1), "online/env_steps": 100 + 40 * (k + 1), "loss": 1.0}
      if value is not None:  # A window in which no episode ended logs no return.
        row["online/episode_return"] = value
      f.write(json.dumps(row) + "\n")


def test_finetune_learning_curves(tmp_path):
  _write_online_run(str(tmp_path / "p0"), "pretrained", 0, [1.0, 2.0, None, 4.0, 5.0, 6.0])
  _write_online_run(str(tmp_path / "p1"), "pretrained", 1, [3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
  _write_online_run(str(tmp_path / "s0"), "scratch", 0, [0.0] * 6)
  loaded, _ = build.load_runs([str(tmp_path / d) for d in ("p0", "p1", "s0")], "custom")
  left_out = []
  curves = build.finetune_curves(loaded, left_out)
  assert not left_out
  (panel,) = curves
  assert panel.title == "Breakout v1 (online)" and panel.x_label == "environment steps"
  (x0, y0), (x1, _) = curves[panel]["pretrained"]
  np.testing.assert_array_equal(x0, [140, 180, 260, 300, 340])  # The window without episodes.
  np.testing.assert_array_equal(y0, [1, 2, 4, 5, 6])
  assert len(x1) == 6 and len(curves[panel]["scratch"]) == 1
  # Smoothed over 5 logs, each mean at its last window: run 0 has one point (340: 3.6), run 1
  # two (300: 5.0, 340: 6.0); on run 0's grid, within both runs' range: x = 340 only.
  grid, ys = plots._on_common_grid(curves[panel]["pretrained"], smooth=True)
  np.testing.assert_array_equal(grid, [340])
  np.testing.assert_allclose(ys[:, 0], [3.6, 6.0])
  plots.plot_learning_curves(str(tmp_path / "curves.png"), curves)
  assert matplotlib.image.imread(str(tmp_path / "curves.png")).shape[1] > 100


def test_finetune_table_uses_dqn_reference_when_given(tmp_path):
  def run(init, returns):
    results = _results({"Pong": returns}, protocol_name="dqn")
    return build.Run("w", "scaled_ql", "near_optimal", 10, 0, "offline_finetune", init, results)

  finetune_runs = [run("pretrained", [0.0, 2.0]), run("scratch", [-20.7, -20.7])]
  # DQN-normalised with a DQN reference of 9.3 for Pong: (1.0 + 20.7) / (9.3 + 20.7) = 72.3%.
  tables.finetune_table(str(tmp_path), "ft", finetune_runs, {"Pong": 9.3})
  with open(tmp_path / "ft.csv") as f:
    row = list(csv.DictReader(f))[0]
  assert row["pretrained DQN-normalised"] == "72.3%"
  assert row["scratch DQN-normalised"] == "0.0%"
  assert row["pretrained return (mean ± sd over runs)"] == "1.0 ± 0.0"


def test_compare_with_the_data(run_root, tmp_path):
  # The collector's episode log: checkpoint 0 scored 2 and 4, checkpoint 1 scored 10 and 12.
  os.makedirs(tmp_path / "Breakout" / "1")
  (tmp_path / "Breakout" / "1" / "episodes.csv").write_text(
    "suffix,return,length,truncated\n0,2,10,0\n0,4,10,0\n1,10,10,0\n1,12,10,0\n"
  )
  table = compare.compare([str(run_root / "sql"), str(run_root / "bc")], str(tmp_path), "custom")
  lines = table.splitlines()
  assert lines[0] == (
    "| Game | Data (behaviour) | Data, best checkpoint | scaled_ql @ step 10 | scaled_ql HNS "
    "| bc @ step 10 | bc HNS |"
  )
  # Cells: mean [95% bootstrap interval] (runs x episodes). Two episodes 1.7 and 30.5 resample
  # to means 1.7, 16.1 or 30.5, so the interval is their range.
  breakout = lines[2].split(" | ")
  assert breakout[1].startswith("7.0 [") and breakout[1].endswith("] (4)")
  assert breakout[2] == "11.0 [10.0, 12.0] (2) [ckpt 1]"
  assert breakout[3:] == ["16.1 [1.7, 30.5] (1×2)", "50.0%", "1.7 [1.7, 1.7] (1×2)", "0.0% |"]
  assert lines[3].startswith("| Pong | — | — | 14.6 [14.6, 14.6] (1×2) | 100.0% |")
  # Breakout's two episodes are too few to tell scaled_ql from bc or the data; Pong's are not.
  assert ("- scaled_ql vs the data's best checkpoint: above on 0, below on 0, within noise on 1 "
          "(Breakout) of 1 games.") in lines  # fmt: skip
  assert (
    "- bc vs the data's average: above on 0, below on 1 (Breakout), within noise on 0 of 1 games."
    in lines
  )
  assert ("- scaled_ql vs bc: above on 1 (Pong), below on 0, within noise on 1 (Breakout) of 2 "
          "games.") in lines  # fmt: skip


def test_the_runs_of_a_method_form_one_column_with_intervals_over_runs(tmp_path):
  info = _pretrain_info("bc")
  for seed, returns in enumerate(([1.0, 1.0, 1.0], [3.0, 3.0, 3.0], [8.0, 8.0, 8.0])):
    _write_run(str(tmp_path / f"bc_{seed}"), {"Breakout": returns}, **{**info, "seed": seed})
  table = compare.compare([str(tmp_path / f"bc_{s}") for s in range(3)], None, "custom")
  header, _, row = table.splitlines()[:3]
  assert header == "| Game | Data (behaviour) | bc @ step 10 | bc HNS |"
  # The mean of the runs' means, 4.0; resampling the 3 runs gives means from 1.0 to 8.0.
  cell = row.split(" | ")[2]
  low, high = (float(x) for x in cell.split("[")[1].split("]")[0].split(", "))
  assert (
    cell.startswith("4.0 [") and cell.endswith("(3×3)") and 1.0 <= low < 2.5 and 6.0 < high <= 8.0
  )


def test_compare_refuses_a_directory_that_is_not_a_run(tmp_path):
  with pytest.raises(FileNotFoundError, match="run_info.json does not exist"):
    compare.compare([str(tmp_path)], None, "custom")
