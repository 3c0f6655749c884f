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
from scipy import stats

from scaled_ql import cli, games, runs
from scaled_ql.report import build, compare, plots, scores, significance, tables

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


def _scaling_rows(output, iqm_by_size):
  """scaling.csv's rows and the left-out notes for Scaled QL at the given {size: IQM}: each size
  has 3 runs (offsets -0.02, 0, 0.02) on 2 games, whose pooled IQM is that value."""
  offsets = np.array([[-0.02, -0.02], [0.0, 0.0], [0.02, 0.02]])
  groups = {("scaled_ql", "near_optimal", n): v for n, v in iqm_by_size.items()}
  estimates = {g: {"iqm": scores.Estimate(v, v - 0.05, v + 0.05)} for g, v in groups.items()}
  matrices = {g: v + offsets for g, v in groups.items()}
  left_out = []
  plots.scaling(str(output), estimates, matrices, left_out, reps=500)
  with open(output / "scaling.csv") as f:
    return list(csv.DictReader(f)), left_out


def test_scaling_fit_is_written(tmp_path):
  rows, left_out = _scaling_rows(tmp_path, {1e6: 0.5, 1e7: 0.5 * 10**0.2, 1e8: 0.5 * 100**0.2})
  (row,) = rows
  assert float(row["exponent"]) == pytest.approx(0.2, abs=1e-4)
  assert float(row["r_squared"]) == pytest.approx(1.0)
  # Runs resampled within sizes: the interval holds the fit and is as narrow as the runs' spread.
  low, high = float(row["exponent_ci_low"]), float(row["exponent_ci_high"])
  assert low <= 0.2 <= high and 0 < high - low < 0.05, (low, high)
  assert (row["num_sizes_dropped"], row["runs_per_size"]) == ("0", "3/3/3")
  assert left_out == []
  assert matplotlib.image.imread(str(tmp_path / "scaling.png")).ndim == 3


def test_scaling_fit_names_dropped_sizes_and_gives_no_r_squared_for_two_sizes(tmp_path):
  rows, left_out = _scaling_rows(tmp_path, {1e6: 0.5, 1e7: -0.1, 1e8: 0.5 * 100**0.2})
  (row,) = rows
  assert (row["num_sizes"], row["num_sizes_dropped"], row["r_squared"]) == ("2", "1", "—")
  assert float(row["exponent"]) == pytest.approx(0.2, abs=1e-4)
  assert left_out == [
    "scaling fit Scaled QL (near_optimal): size 10000000 left out (IQM -0.100 <= 0)"
  ]


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
  assert row["pretrained return (mean ± sd over runs)"] == "1.0 ± —"  # One run: no sd.


def _write_episodes(data_dir, game, episodes_by_suffix):
  """The collector's episode log of `game`: {checkpoint suffix: returns}."""
  os.makedirs(data_dir / game / "1")
  rows = [f"{k},{r},10,0" for k, returns in episodes_by_suffix.items() for r in returns]
  (data_dir / game / "1" / "episodes.csv").write_text(
    "suffix,return,length,truncated\n" + "\n".join(rows) + "\n"
  )


def test_compare_with_the_data(run_root, tmp_path):
  # The collector's episode log: checkpoint 0 scored 2 and 4, checkpoint 1 scored 10 and 12.
  _write_episodes(tmp_path, "Breakout", {0: [2, 4], 1: [10, 12]})
  table = compare.compare([str(run_root / "sql"), str(run_root / "bc")], str(tmp_path), "custom")
  lines = table.splitlines()
  # The confirmatory family comes first, before any result.
  assert lines[0].startswith(
    "Confirmatory family, declared before the results: scaled_ql vs "
    "bc and scaled_ql vs the data's best checkpoint, on each game"
  )
  assert lines[2] == (
    "| Game | Data (behaviour) | Data, best checkpoint | scaled_ql @ step 10 | scaled_ql HNS "
    "| bc @ step 10 | bc HNS |"
  )
  # Cells: mean [95% interval] (what it rests on). One run: an interval over its episodes (two
  # episodes 1.7 and 30.5 resample to means 1.7, 16.1 or 30.5, so the interval is their range).
  breakout = lines[4].split(" | ")
  assert breakout[1].startswith("7.0 [") and breakout[1].endswith("] (4 episodes, 2 checkpoints)")
  assert breakout[2] == "11.0 [10.0, 12.0] (2 episodes) [ckpt 1]"
  assert breakout[3:] == [
    "16.1 [1.7, 30.5] (1 run, 2 episodes)", "50.0%", "1.7 [1.7, 1.7] (1 run, 2 episodes)", "0.0% |"
  ]  # fmt: skip
  assert lines[5].startswith("| Pong | — | — | 14.6 [14.6, 14.6] (1 run, 2 episodes) | 100.0% |")
  # The IQM of human-normalised scores: 0.5 and 1.0 (IQM of two keeps both), 0.0 and 0.0.
  assert lines[6].startswith("| IQM (human-normalised) | — | — | — | 75.0% [")
  # One run each: no verdict at all, and it says why.
  assert not any(line.startswith(("Confirmatory (", "Exploratory (")) for line in lines)
  assert ("- No verdict where scaled_ql has 1 run (scaled_ql vs the data's average, scaled_ql "
          "vs the data's best checkpoint, scaled_ql vs bc): a verdict needs 2 or more runs "
          "(pairs of runs where paired) on a row.") in lines  # fmt: skip
  assert "- No verdict where bc has 1 run (bc vs the data's average, bc vs the data's best " \
         "checkpoint): a verdict needs 2 or more runs (pairs of runs where paired) on a row." \
         in lines  # fmt: skip


def _write_seeds(root, method, returns_by_seed):
  """A method's runs named as launch/local.sh names them: METHOD, METHOD_seed1, ..."""
  paths = []
  for seed, returns in enumerate(returns_by_seed):
    paths.append(str(root / (method + (f"_seed{seed}" if seed else ""))))
    _write_run(paths[-1], returns, **_pretrain_info(method, seed))
  return paths


def test_compare_prints_corrected_verdicts_of_paired_seeds(tmp_path):
  runs_dir = tmp_path / "runs"
  sql = _write_seeds(runs_dir, "scaled_ql", [
    {"Breakout": [19.0, 21.0], "Pong": [-20.0, -19.0]},
    {"Breakout": [20.0, 22.0], "Pong": [-21.0, -20.0]},
    {"Breakout": [22.0, 23.0], "Pong": [-19.0, -21.0]},
  ])  # fmt: skip
  bc = _write_seeds(runs_dir, "bc", [
    {"Breakout": [2.0, 2.0], "Pong": [-20.0, -21.0]},
    {"Breakout": [2.0, 3.0], "Pong": [-19.0, -20.0]},
    {"Breakout": [3.0, 4.0], "Pong": [-21.0, -20.0]},
  ])  # fmt: skip
  _write_episodes(tmp_path / "replay", "Breakout", {0: [2, 4, 3, 3], 1: [10, 12, 11, 11]})
  table = compare.compare(sql + bc, str(tmp_path / "replay"), "custom")
  lines = table.splitlines()
  assert lines[4].split(" | ")[3] == "21.2 [18.0, 24.3] (3 runs × 2)"
  # Scaled QL minus BC per seed: Breakout 18, 18.5, 19 (a paired t of 64 on 2 degrees of
  # freedom); Pong 1, -1, 0.5. Confirmatory: vs BC on both games and the IQM, vs the best
  # checkpoint on Breakout (the data has no Pong, so no IQM either): 4 comparisons.
  family = lines.index(next(line for line in lines if line.startswith("Confirmatory (")))
  assert lines[family].startswith("Confirmatory (4 comparisons, Holm-corrected within them)")
  assert "uncorrected tests at 5% would give 0.20 false verdicts" in lines[family]
  assert lines[family + 2] == (
    "- scaled_ql vs bc (paired, 3 seeds): above on 1 (Breakout p_Holm<0.001), below on 0, no "
    "difference detected on 1 (Pong p_Holm=0.81) of 2 games; IQM: above (p_Holm=0.0022)."
  )
  assert lines[family + 1].startswith(
    "- scaled_ql vs the data's best checkpoint (3 runs vs the data): above on 1 (Breakout"
  )
  assert lines[family + 3].startswith("Exploratory (3 comparisons")  # The rest: vs the data.
  assert "within noise" not in table


def test_pair_keys_pair_seeds_of_one_directory_and_runs_built_from_others(tmp_path):
  def keys(path, **info):
    return compare.pair_keys(str(tmp_path / path), info)

  assert keys("a/scaled_ql", seed=1) & keys("a/bc_seed1", seed=1)
  assert not keys("a/scaled_ql", seed=1) & keys("a/bc", seed=0)
  assert not keys("a/scaled_ql", seed=1) & keys("b/bc", seed=1)
  # A Q-guided run elsewhere: paired with its proposal (a checkpoint of it) and its critic.
  q_guided = keys("c/q_guided_bc", seed=5, init_from={"source": f"{tmp_path}/a/bc/checkpoints/9"},
                  method_config={"critic_from": f"{tmp_path}/a/scaled_ql/"})  # fmt: skip
  assert q_guided & keys("a/bc", seed=0) and q_guided & keys("a/scaled_ql", seed=1)
  assert not q_guided & keys("a/dt", seed=0)


def test_the_runs_of_a_method_form_one_column_with_intervals_over_runs(tmp_path):
  info = _pretrain_info("bc")
  for seed, returns in enumerate(([1.0, 1.0, 1.0], [3.0, 3.0, 3.0], [8.0, 8.0, 8.0])):
    _write_run(str(tmp_path / f"bc_{seed}"), {"Breakout": returns}, **{**info, "seed": seed})
  table = compare.compare([str(tmp_path / f"bc_{s}") for s in range(3)], None, "custom")
  header, _, row = table.splitlines()[2:5]
  assert header == "| Game | Data (behaviour) | bc @ step 10 | bc HNS |"
  # The mean of the runs' means, 4.0, with a t interval over the 3 runs: 4.0 -/+ 4.303 * 2.082.
  assert row.split(" | ")[2] == "4.0 [-5.0, 13.0] (3 runs × 3)"


def test_compare_refuses_a_directory_that_is_not_a_run(tmp_path):
  with pytest.raises(FileNotFoundError, match="run_info.json does not exist"):
    compare.compare([str(tmp_path)], None, "custom")


def test_the_confirmatory_family_is_declared_by_flag():
  assert compare._parse_confirmatory(["scaled_ql:best", "bc:data", "dt:bc"]) == [
    ("scaled_ql", significance.BEST), ("bc", significance.DATA), ("dt", "bc")
  ]  # fmt: skip
  with pytest.raises(cli.UserError, match="'scaled_ql' is not A:B"):
    compare._parse_confirmatory(["scaled_ql"])


def test_compare_by_run_name_tests_the_declared_change_of_a_margin(tmp_path):
  """launch/data_quality.sh's table: one method's runs on two data selections form a column
  per run name (by method, one column would mix them: refused), and the declared margin
  `scaled_ql_early-bc_early:scaled_ql-bc` is tested."""
  # Per seed, Scaled QL's margin over BC: 10, 11, 9.5 on the early data, 3, 2.5, 3.5 on all.
  means = {"scaled_ql_early": [12.0, 13.0, 12.5], "bc_early": [2.0, 2.0, 3.0],
           "scaled_ql": [5.0, 4.5, 6.5], "bc": [2.0, 2.0, 3.0]}  # fmt: skip
  paths = []
  for name, by_seed in means.items():
    for seed, mean in enumerate(by_seed):
      paths.append(str(tmp_path / (name + (f"_seed{seed}" if seed else ""))))
      info = _pretrain_info(name.removesuffix("_early"), seed)
      info["data_quality"] = "early" if name.endswith("_early") else "all"
      _write_run(paths[-1], {"Breakout": [mean - 1.0, mean + 1.0]}, **info)
  with pytest.raises(cli.UserError, match="column scaled_ql would mix runs of different "
                     "data_quality all, early: give them distinct method names"):  # fmt: skip
    compare.compare(paths, None, "custom")
  declared = [("scaled_ql_early", "bc_early"), ("scaled_ql_early-bc_early", "scaled_ql-bc")]
  table = compare.compare(paths, None, "custom", declared, columns="run_name", strict=True)
  assert "| scaled_ql_early @ step 10 | scaled_ql_early HNS | bc_early @ step 10 |" in table
  assert ("scaled_ql_early vs bc_early and scaled_ql_early-bc_early vs scaled_ql-bc (the "
          "margin of scaled_ql_early over bc_early against that of scaled_ql over bc)"
          ) in table  # fmt: skip
  # Welch's t on the margins (10, 11, 9.5) and (3, 2.5, 3.5): t = 13.6 on 3.4 degrees of
  # freedom, p = 0.0004, the family's smallest: Holm's first step doubles it (2 comparisons).
  p_value = stats.ttest_ind([10, 11, 9.5], [3, 2.5, 3.5], equal_var=False).pvalue
  assert ("- scaled_ql_early-bc_early vs scaled_ql-bc (margins: paired, 3 seeds; paired, 3 "
          f"seeds): above on 1 (Breakout {compare._p(2 * p_value)}), below on 0, no difference "
          "detected on 0 of 1 games.") in table.splitlines()  # fmt: skip
  with pytest.raises(cli.UserError, match="'scaled_ql_erly' is not a column"):
    compare.compare(paths, None, "custom", [("scaled_ql_erly", "bc_early")], "run_name", True)
