"""Tests for scaled_ql.report: a report built from tiny real runs evaluated on real ALE."""

import csv
import json
import os

import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest

from scaled_ql import (
  atari,
  evaluate,
  games,
  networks,
  report,
  report_plots,
  report_tables,
  scores,
  trainer,
)

_GAMES = ["Breakout", "Pong"]
_PNGS = ["iqm_ci.png", "per_game.png", "performance_profile.png", "scaling.png"]
_TABLES = [
  "main_table.md", "main_table.csv", "main_table.tex", "per_game.md", "per_game.csv",
  "finetune_offline.md", "finetune_offline.csv", "finetune_online.md", "finetune_online.csv",
  "scaling.csv", "report.md",
]  # fmt: skip


def _tiny_policy(game_names, width, seed):
  """The project's tiny network, untrained, as a greedy policy; returns (policy_fn, num_params)."""
  config = networks.NetworkConfig(torso="tiny", widths=(width, width, width), projection_dim=32)
  network = networks.make_network(config, [games.num_actions(g) for g in game_names])
  obs, game_id = jnp.zeros((1, 84, 84, 4), jnp.uint8), jnp.zeros(1, jnp.int32)
  params = network.init(jax.random.PRNGKey(seed), obs, game_id)
  num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  return trainer.make_greedy_policy(network, params), num_params


def _make_run(workdir, method, game_names, *, phase="pretrain", init=None, width=4, seed=0):
  """Writes run_info.json and evaluates a tiny network for 2 short episodes per game."""
  os.makedirs(workdir)
  policy_fn, num_params = _tiny_policy(game_names, width, seed)
  info = dict(method=method, game_names=game_names, num_params=num_params, seed=seed,
              data_quality="near_optimal", phase=phase)  # fmt: skip
  if init:
    info["init"] = init
  with open(os.path.join(workdir, "run_info.json"), "w") as f:
    json.dump(info, f)
  protocol = atari.Protocol(max_episode_steps=60)
  results = evaluate.evaluate(policy_fn, game_names, 2, protocol=protocol, epsilon=0.5, seed=seed)
  evaluate.write_results(workdir, results, checkpoint_step=10)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("runs")
  _make_run(str(root / "sql"), "scaled_ql", _GAMES)
  _make_run(str(root / "bc"), "bc", _GAMES, seed=1)
  _make_run(
    str(root / "ft_pre"), "scaled_ql", ["Pong"], phase="offline_finetune", init="pretrained"
  )
  _make_run(
    str(root / "ft_scratch"), "scaled_ql", ["Pong"], phase="offline_finetune", init="scratch"
  )
  os.makedirs(root / "not_a_run")
  os.makedirs(root / "never_evaluated")
  with open(root / "never_evaluated" / "run_info.json", "w") as f:
    json.dump({"method": "dt", "data_quality": "low_quality", "num_params": 5, "seed": 0}, f)
  out = str(root / "report")
  run_dirs = [str(root / d) for d in ("sql", "bc", "ft_pre", "ft_scratch", "not_a_run")]
  left_out = report.build_report(run_dirs + [str(root / "never_evaluated")], out,
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
  out, _, root = report_dir
  with open(os.path.join(out, "main_table.csv")) as f:
    rows = list(csv.reader(f))
  assert rows[0][:4] == [
    "Method", "Near-optimal IQM [95% CI]", "Near-optimal median", "Near-optimal runs x games (params)"
  ]  # fmt: skip
  assert [r[0] for r in rows[1:4]] == ["Scaled QL", "DT", "BC"]
  assert rows[2][1] == "—"  # No DT runs were given.
  assert any(r[0].startswith("DT-200M (reported)") and r[1] == "126%" for r in rows)
  # The Scaled QL cell is the IQM of its human-normalised per-game means (one run: CI = point).
  results = evaluate.read_results(evaluate.find_results(str(root / "sql"))[0])
  hns = [games.human_normalized_score(g, np.mean(results.games[g].returns)) for g in _GAMES]
  iqm = scores.aggregate_metrics(np.array([hns]))[0]
  assert rows[1][1] == f"{100 * iqm:.1f}% [{100 * iqm:.1f}, {100 * iqm:.1f}]"
  with open(os.path.join(out, "main_table.tex")) as f:
    tex = f.read()
  assert "\\begin{tabular}" in tex and "Scaled QL" in tex and "\\%" in tex


def test_per_game_and_finetune_tables(report_dir):
  out, _, _ = report_dir
  with open(os.path.join(out, "per_game.csv")) as f:
    per_game = list(csv.DictReader(f))
  assert {(r["Game"], r["Group"].split(" ")[0]) for r in per_game} == {
    ("Breakout", "Scaled"), ("Pong", "Scaled"), ("Breakout", "BC"), ("Pong", "BC")}  # fmt: skip
  with open(os.path.join(out, "finetune_offline.csv")) as f:
    finetune = list(csv.DictReader(f))
  assert len(finetune) == 1 and finetune[0]["Game"] == "Pong"
  assert finetune[0]["pretrained runs"] == "1" and finetune[0]["scratch runs"] == "1"


def test_nothing_is_dropped_silently(report_dir):
  out, left_out, root = report_dir
  text = "\n".join(left_out)
  assert f"run {root / 'not_a_run'}: no run_info.json" in text
  assert f"run {root / 'never_evaluated'}: no evaluation results" in text
  assert "python -m scaled_ql.evaluate" in text
  assert "finetune_online: no runs" in text
  assert "scaling fit" in text  # One model size per method: no power law, and it says so.
  with open(os.path.join(out, "report.md")) as f:
    index = f.read()
  assert "## Left out" in index and "never_evaluated" in index
  assert index.count("| custom |") == 4  # The four evaluated runs, with their protocol.


def test_scaling_fit_is_written(tmp_path):
  estimates = {
    ("scaled_ql", "near_optimal", n): {"iqm": scores.Estimate(v, v - 0.05, v + 0.05)}
    for n, v in [(1e6, 0.5), (1e7, 0.5 * 10**0.2), (1e8, 0.5 * 100**0.2)]
  }
  left_out = []
  report_plots.scaling(str(tmp_path), estimates, left_out)
  with open(tmp_path / "scaling.csv") as f:
    row = list(csv.DictReader(f))[0]
  assert float(row["exponent"]) == pytest.approx(0.2, abs=1e-4)
  assert left_out == []
  assert matplotlib.image.imread(str(tmp_path / "scaling.png")).ndim == 3


def test_games_without_human_score_or_not_in_every_run_are_listed():
  def run(game_returns):
    per_game = {g: evaluate.GameResult(0, 4, list(r), [10] * len(r), [False] * len(r))
                for g, r in game_returns.items()}  # fmt: skip
    results = evaluate.EvalResults(per_game, {}, "dqn", 0.001, 0, 0, 1, 10, 1.0)
    return report.Run("w", "bc", "near_optimal", 10, 0, "pretrain", "scratch", results)

  left_out = []
  matrix, names = report.group_matrix(
    [run({"Breakout": [30.5], "Carnival": [100.0], "Pong": [14.6]}),
     run({"Breakout": [1.7], "Carnival": [50.0]})], left_out, "BC")  # fmt: skip
  assert names == ["Breakout"]
  np.testing.assert_allclose(matrix, [[1.0], [0.0]])
  assert left_out == [
    "BC: game Pong not evaluated by every run of the group",
    "BC: game Carnival has no human score (raw scores in per_game only)",
  ]


def test_cli_fails_clearly_without_evaluated_runs(tmp_path):
  import subprocess
  import sys

  proc = subprocess.run(
    [sys.executable, "-m", "scaled_ql.report", f"--runs={tmp_path}/a,{tmp_path}",
     f"--output={tmp_path}/out"],
    capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  message = proc.stderr.strip().splitlines()[-1]
  assert "no evaluated run" in message and f"{tmp_path}/a: directory does not exist" in message


def test_finetune_table_uses_dqn_reference_when_given(tmp_path):
  def run(init, returns):
    per_game = {"Pong": evaluate.GameResult(3, 6, returns, [10] * len(returns), [False] * 2)}
    results = evaluate.EvalResults(per_game, {}, "dqn", 0.001, 0, 0, 1, 10, 1.0)
    return report.Run("w", "scaled_ql", "near_optimal", 10, 0, "offline_finetune", init, results)

  runs = [run("pretrained", [0.0, 2.0]), run("scratch", [-20.7, -20.7])]
  # DQN-normalised with a DQN reference of 9.3 for Pong: (1.0 + 20.7) / (9.3 + 20.7) = 72.3%.
  report_tables.finetune_table(str(tmp_path), "ft", runs, {"Pong": 9.3})
  with open(tmp_path / "ft.csv") as f:
    row = list(csv.DictReader(f))[0]
  assert row["pretrained DQN-normalised"] == "72.3%"
  assert row["scratch DQN-normalised"] == "0.0%"
  assert row["pretrained return (mean ± sd over runs)"] == "1.0 ± 0.0"


def test_run_info_is_completed_from_the_operative_gin_config(tmp_path):
  with open(tmp_path / "operative_config.gin", "w") as f:
    f.write("# Parameters for ReplayDataset:\nReplayDataset.suffixes = 'first20'\n"
            "make_eval_fn.seed = 7\ntrain.method = 'bc'\ntrain.seed = 3\n")  # fmt: skip
  with open(tmp_path / "run_info.json", "w") as f:
    json.dump({"method": "scaled_ql", "num_params": 10}, f)
  info = report._run_info(str(tmp_path))
  # run_info.json wins; gin supplies what it lacks; only train.* and the data suffixes count.
  assert info == {"method": "scaled_ql", "seed": 3, "data_quality": "low_quality", "num_params": 10}
