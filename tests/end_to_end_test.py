"""End to end on real ALE data: collect -> convert -> pretrain 3 steps -> resume to 5 -> report.

Every stage runs as its user would run it: `python -m ...` in a subprocess.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest


def run(module: str, *args: str) -> subprocess.CompletedProcess:
  result = subprocess.run(
    [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=600
  )
  assert result.returncode == 0, (
    f"{module} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
  )
  return result


def pretrain_args(workdir, shard_dir, *bindings: str) -> list[str]:
  """`scaled_ql.pretrain` arguments for debug.gin on `shard_dir`, plus gin bindings."""
  return [
    f"--workdir={workdir}",
    "--gin_file=debug.gin",
    f"--gin_bindings=data.ReplayDataset.shard_dir = '{shard_dir}'",
    *(f"--gin_bindings={b}" for b in bindings),
  ]


def pretrain(workdir, shard_dir, num_grad_steps: int) -> subprocess.CompletedProcess:
  return run(
    "scaled_ql.pretrain",
    *pretrain_args(workdir, shard_dir, f"train.num_grad_steps = {num_grad_steps}"),
  )


def metrics_rows(workdir) -> list[dict]:
  """Every line of a run's metrics.jsonl (strictly: a torn line fails the test)."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def restore_params(workdir, step: int) -> dict:
  tree = ocp.PyTreeCheckpointer().restore(
    os.path.join(workdir, "checkpoints", str(step), "default")
  )
  return tree["params"]


def jax_leaves(tree) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.fixture(scope="module")
def runs(shard_dir, tmp_path_factory):
  """A run interrupted after 3 steps and resumed to 5, and the same run done straight."""
  root = tmp_path_factory.mktemp("runs")
  resumed, straight = str(root / "resumed"), str(root / "straight")
  pretrain(resumed, shard_dir, 3)
  assert sorted(os.listdir(os.path.join(resumed, "checkpoints"))) == ["3"]
  second = pretrain(resumed, shard_dir, 5)
  assert "Resumed from the checkpoint at step 3" in second.stderr
  pretrain(straight, shard_dir, 5)
  return resumed, straight


def test_pretrain_resumes_exactly(runs):
  resumed, straight = runs
  # The run's record: every step logged once, finite, with per-game metrics and evaluation.
  rows = metrics_rows(resumed)
  train_rows = [r for r in rows if "loss" in r]
  assert [r["step"] for r in train_rows] == [1, 2, 3, 4, 5]
  assert all(np.isfinite(r["loss"]) for r in train_rows)
  assert {"per_game/td_loss/Breakout", "per_game/td_loss/Pong"} <= set(train_rows[-1])
  logged = {"td_loss", "cql_loss", "q_mean", "grad_norm", "steps_per_s", "examples_per_s", "eta_s"}
  assert all(logged <= set(r) for r in train_rows), logged - set(train_rows[-1])
  assert train_rows[-1]["eta_s"] == 0.0 and train_rows[0]["eta_s"] > 0.0
  assert any("eval/Breakout/return" in r for r in rows)
  for name in ("operative_config.gin", "run_info.json"):
    assert os.path.exists(os.path.join(resumed, name))
  assert os.listdir(os.path.join(resumed, "tensorboard"))

  # Interrupting and resuming gives bit-identical parameters to an uninterrupted run.
  a, b = restore_params(resumed, 5), restore_params(straight, 5)
  leaves_a, leaves_b = jax_leaves(a), jax_leaves(b)
  assert len(leaves_a) == len(leaves_b) > 0
  for x, y in zip(leaves_a, leaves_b, strict=True):
    np.testing.assert_array_equal(x, y)
  # ... and training did change them.
  assert any(
    not np.array_equal(x, y)
    for x, y in zip(jax_leaves(restore_params(resumed, 3)), leaves_a, strict=True)
  )


def test_evaluate_and_report_a_trained_run(runs, tmp_path):
  resumed, _ = runs
  out = run(
    "scaled_ql.evaluate",
    f"--workdir={resumed}",
    "--num_episodes=2",
    "--num_envs_per_game=2",
    "--max_episode_steps=60",
    "--games=Pong",
    f"--video_dir={tmp_path / 'videos'}",
  )
  assert "Pong" in out.stdout and "Breakout" not in out.stdout
  assert os.listdir(tmp_path / "videos") == ["Pong_v0.mp4"]
  report_dir = tmp_path / "report"
  # A shortened episode cap is not the DQN protocol: the results are filed as "custom".
  run(
    "scaled_ql.report",
    f"--runs={resumed}",
    f"--output={report_dir}",
    "--reps=50",
    "--protocol=custom",
  )
  # The report uses each run's latest evaluation: the Pong-only one just made.
  per_game = (report_dir / "per_game.md").read_text()
  assert "| Pong |" in per_game and "| Breakout |" not in per_game
  assert (report_dir / "main_table.md").exists() and (report_dir / "iqm_ci.png").exists()


def test_compare_against_the_data(runs, shard_dir, tmp_path):
  resumed, straight = runs
  replay = os.path.join(os.path.dirname(shard_dir), "replay")
  out = run(
    "scaled_ql.report.compare",
    f"--runs={resumed},{straight}",
    f"--data_dir={replay}",
    f"--output={tmp_path / 'table.md'}",
    "--protocol=custom",  # debug.gin evaluates with a 50-step cap.
  )
  # The confirmatory family is declared first.
  assert out.stdout.startswith("Confirmatory family, declared before the results: scaled_ql vs bc")
  # The data column: mean [interval] (episodes, checkpoints) of the collector's logged,
  # unclipped scores: the mean of its checkpoints' means.
  breakout = next(line for line in out.stdout.splitlines() if line.startswith("| Breakout |"))
  data_cell = breakout.split("|")[2]
  assert float(data_cell.split("[")[0]) >= 0.0
  assert re.search(r"\(\d+ episodes, 2 checkpoints\)", data_cell), data_cell
  # Two data checkpoints: the best checkpoint's average too, and the verdicts against it (the
  # two runs of one method are enough for a test).
  assert re.search(r"\[ckpt [01]\]", breakout.split("|")[3]), breakout
  # Breakout's two runs give a verdict against it; when test_evaluate_and_report_a_trained_run
  # ran first, the resumed run's latest evaluation holds Pong only, Breakout has 1 run, and
  # the script must say that there is no verdict.
  if "(2 runs" in breakout:
    assert "- scaled_ql vs the data's best checkpoint (2 runs vs the data): above on" in out.stdout
  else:
    assert "(1 run, " in breakout and "- No verdict where scaled_ql has 1 run (" in out.stdout
  # The two runs of one method form one column. Pong: 1 episode each, or 2 + 1 after
  # test_evaluate_and_report_a_trained_run evaluated Pong alone in the resumed run.
  pong = next(line for line in out.stdout.splitlines() if line.startswith("| Pong |"))
  assert re.search(r"\(2 runs( × 1|, 3 episodes)\)", pong), pong
  assert "scaled_ql vs scaled_ql" not in out.stdout
  assert (tmp_path / "table.md").read_text().strip() == out.stdout.strip()


def test_compare_without_logged_episodes_for_a_game(runs, shard_dir, tmp_path):
  from scaled_ql.report import compare

  replay = os.path.join(os.path.dirname(shard_dir), "replay")
  os.makedirs(tmp_path / "Breakout" / "1")
  shutil.copy(os.path.join(replay, "Breakout", "1", "episodes.csv"), tmp_path / "Breakout" / "1")
  os.makedirs(tmp_path / "Pong" / "1")
  (tmp_path / "Pong" / "1" / "episodes.csv").write_text("suffix,return,length,truncated\n")
  table = compare.compare(list(runs), str(tmp_path), "custom")
  header, _, breakout, pong = table.splitlines()[2:6]
  assert "Data, best checkpoint" in header and pong.startswith("| Pong | — | — |")
  assert header.count("|") == breakout.count("|") == pong.count("|")
  # Verdicts against the data count the games that have data: Breakout only (tested, or with no
  # verdict where the resumed run's latest evaluation is test_evaluate_and_report's Pong alone).
  against_data = [line for line in table.splitlines() if "vs the data's average" in line]
  assert against_data and not any("Pong" in line for line in against_data), table


def test_collect_with_a_trained_policy(runs, tmp_path):
  resumed, _ = runs
  out = tmp_path / "replay"

  def collect(policy_workdir):
    run(
      "data_prep.collect",
      f"--output_dir={out}",
      "--games=Pong",
      "--num_checkpoints=2",
      "--checkpoint_size=200",
      "--policy=schedule",
      f"--policy_workdir={policy_workdir}",
      "--epsilon_start=1.0",
      "--epsilon_end=0.0",
      "--num_envs=2",
      "--max_episode_steps=100",
    )

  collect(resumed)
  logs = sorted(os.listdir(out / "Pong" / "1" / "replay_logs"))
  assert "$store$_action_ckpt.1.gz" in logs and "add_count_ckpt.1.gz" in logs
  collect(tmp_path / "no_such_run")  # Complete: nothing to collect, so no policy is loaded.


def run_failing(module: str, *args: str) -> str:
  """Runs a command that must fail with an `error: ...` message; returns that message."""
  result = subprocess.run(
    [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=600
  )
  assert result.returncode == 2, f"{module} should fail cleanly:\n{result.stderr[-5000:]}"
  assert "Traceback" not in result.stderr, result.stderr[-5000:]
  return result.stderr[result.stderr.rindex("error: ") :]


def pretrain_failing(workdir, shard_dir, *bindings: str) -> str:
  return run_failing("scaled_ql.pretrain", *pretrain_args(workdir, shard_dir, *bindings))


def test_bad_input_fails_before_compute(shard_dir, tmp_path):
  workdir = str(tmp_path / "run")
  message = pretrain_failing(workdir, shard_dir, "ScaledQL.cql_alfa = 1.0")
  assert "cql_alfa" in message
  message = pretrain_failing(workdir, shard_dir, "train.game_names = ['Breakout', 'Pongg']")
  assert "Pongg" in message
  message = pretrain_failing(workdir, shard_dir, "train.game_names = ['Breakout', 'Seaquest']")
  assert "Seaquest" in message and "data_prep.convert" in message
  message = pretrain_failing(workdir, "/nonexistent/shards")
  assert "/nonexistent/shards" in message
  message = pretrain_failing(workdir, shard_dir, "data.ReplayDataset.seed = 3")
  assert "seed" in message  # The trainer passes the seed: binding it would be ignored.
  message = pretrain_failing(workdir, shard_dir, "train.precision = 'fp16'")
  assert message.strip() == (
    "error: train.precision = 'fp16' is not one of 'float32', 'bfloat16', 'auto'."
  )
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))


def test_a_bfloat16_run_trains_checkpoints_resumes_in_float32_and_evaluates(shard_dir, tmp_path):
  workdir = str(tmp_path / "run")
  bf16 = "train.precision = 'bfloat16'"
  run("scaled_ql.pretrain", *pretrain_args(workdir, shard_dir, "train.num_grad_steps = 3", bf16))
  with open(os.path.join(workdir, "run_info.json")) as f:
    info = json.load(f)
  assert (info["precision"], info["compute_dtype"], info["remat"]) == ("bfloat16", "bfloat16", False)
  # The checkpoint holds the float32 parameters; a float32 resume is allowed, with a warning.
  assert {x.dtype for x in jax_leaves(restore_params(workdir, 3))} == {np.dtype(np.float32)}
  resumed = pretrain(workdir, shard_dir, 5)
  assert "The run computed in bfloat16 and continues in float32" in resumed.stderr
  rows = metrics_rows(workdir)
  assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5]
  assert all(np.isfinite(r["loss"]) for r in rows if "loss" in r)
  assert [r["step"] for r in rows if "eval/Breakout/return" in r] == [3, 5]


def test_a_changed_configuration_is_not_resumed(shard_dir, tmp_path):
  workdir = str(tmp_path / "run")
  pretrain(workdir, shard_dir, 3)
  changed = ("NetworkConfig.projection_dim = 32", "train.seed = 7")
  message = pretrain_failing(workdir, shard_dir, *changed)
  assert "different configuration" in message
  assert "seed: 0 -> 7" in message and "'projection_dim': 32" in message
  # Without the run record, the checkpoint itself names the differing parameters and shapes.
  os.remove(os.path.join(workdir, "run_info.json"))
  message = pretrain_failing(workdir, shard_dir, "NetworkConfig.projection_dim = 32")
  assert "does not match the configured model" in message
  assert re.search(r"projection\S*: checkpoint \(\d+, 16\) vs configured \(\d+, 32\)", message)


def test_a_run_starts_from_another_runs_checkpoint(shard_dir, tmp_path):
  source, finetuned = str(tmp_path / "breakout"), str(tmp_path / "finetuned")
  run(
    "scaled_ql.pretrain",
    *pretrain_args(
      source,
      shard_dir,
      "train.game_names = ['Breakout']",
      "train.num_grad_steps = 3",
      "train.eval_fn = None",
    ),
  )
  # Pong is new (6 actions), Breakout's head comes from the source; the torso is frozen.
  finetune = (
    "train.game_names = ['Pong', 'Breakout']", "train.eval_fn = None",
    "train.init_from = @initialization.InitFrom()",
    f"initialization.InitFrom.source = '{source}/checkpoints/3'",
    "initialization.InitFrom.torso_learning_rate_scale = 0.0",
  )  # fmt: skip
  out = run(
    "scaled_ql.pretrain",
    *pretrain_args(finetuned, shard_dir, *finetune, "train.num_grad_steps = 2"),
  )
  assert "init_from" in out.stderr and "new games (fresh heads): ['Pong']" in out.stderr
  pretrained, after = restore_params(source, 3), restore_params(finetuned, 2)
  for module in after:
    if module.endswith("heads"):
      continue
    for name in after[module]:  # The torso: bitwise the pretrained one, still (frozen).
      np.testing.assert_array_equal(after[module][name], pretrained[module][name])
  heads, source_heads = after["scaled_ql/heads"]["w"], pretrained["scaled_ql/heads"]["w"]
  assert heads.shape[0] == 2 and heads.shape[-1] == 6 * 51  # Pong's 6 actions x 51 atoms.
  assert not np.array_equal(heads[1, :, : 4 * 51], source_heads[0])  # Breakout's head trained.
  with open(os.path.join(finetuned, "run_info.json")) as f:
    info = json.load(f)
  assert info["init"] == "pretrained" and info["init_from"]["source"].endswith("checkpoints/3")
  # It resumes like any run (with its split optimizer state), and its identity includes how it
  # started: another torso learning rate is refused.
  resumed = run(
    "scaled_ql.pretrain",
    *pretrain_args(finetuned, shard_dir, *finetune, "train.num_grad_steps = 3"),
  )
  assert "Resumed from the checkpoint at step 2" in resumed.stderr
  changed = pretrain_failing(
    finetuned,
    shard_dir,
    *finetune,
    "train.num_grad_steps = 4",
    "initialization.InitFrom.torso_learning_rate_scale = 0.5",
  )
  assert "different configuration" in changed and "torso_learning_rate_scale" in changed


def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(shard_dir, tmp_path):
  workdir = str(tmp_path / "run")
  pretrain(workdir, shard_dir, 3)
  # Metrics are fetched only at step 8: the step named is still the first that diverged.
  message = pretrain_failing(
    workdir, shard_dir, "optimizers.make_optimizer.learning_rate = 1e30",
    "train.num_grad_steps = 8", "train.log_every_steps = 8", "train.checkpoint_every_steps = 8",
  )  # fmt: skip
  assert "Non-finite training metrics" in message and "at step 4." in message
  assert os.listdir(os.path.join(workdir, "checkpoints")) == ["3"]
  for leaf in jax_leaves(restore_params(workdir, 3)):
    assert np.isfinite(leaf).all()


def test_baselines_train_beside_a_run_and_share_its_table(runs, shard_dir, tmp_path):
  """launch/baselines.sh: BC (greedy and sampled), filtered BC, the DT (sampled and argmax)
  and both Q-guided policies on the Scaled QL run's configuration (Breakout only: random Pong
  episodes outlast the tiny checkpoints, so none ends inside the data), evaluated and
  reported with it."""
  _, straight = runs
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  bindings = ("train.game_names = ['Breakout']; train.num_grad_steps = 2; "
              "optimizers.make_lamb.warmup_steps = 1")  # fmt: skip
  env = dict(os.environ, SQL_RUN=straight, WORKDIR=str(tmp_path), PROTOCOL="custom",
             BINDINGS=bindings, DATA_DIR=os.path.join(os.path.dirname(shard_dir), "replay"))  # fmt: skip
  out = subprocess.run(["bash", os.path.join(repo, "launch", "baselines.sh")], env=env,
                       capture_output=True, text=True, timeout=900)  # fmt: skip
  assert out.returncode == 0, out.stderr[-5000:]
  names = ["bc", "sampled_bc", "filtered_bc", "dt", "dt_argmax", "q_guided_bc", "q_guided_dt"]
  for method in names:
    workdir = method
    with open(tmp_path / workdir / "run_info.json") as f:
      info = json.load(f)
    assert info["method"] == method and info["game_names"] == ["Breakout"]
    assert info["global_batch_size"] == 8  # The Scaled QL run's batch.
  # The Q-guided runs start from their proposals' runs, and distil (2 steps here).
  with open(tmp_path / "q_guided_dt" / "run_info.json") as f:
    assert json.load(f)["init_from"]["source"] == str(tmp_path / "dt")
  # Filtered BC logs what its selection kept.
  assert re.search(r"filling 10% of the rows \(%BC\): Breakout kept \d+ of \d+", out.stderr)
  # The 0-step policies act with their trained runs' parameters.
  for method, trained in (("sampled_bc", "bc"), ("dt_argmax", "dt")):
    with open(tmp_path / method / "run_info.json") as f:
      assert json.load(f)["init_from"]["source"] == str(tmp_path / trained)
  table = (tmp_path / "report" / "main_table.md").read_text()
  for row in (
    "| Scaled QL |",
    "| DT |",
    "| BC |",
    "| Filtered BC",
    "| BC (sampled action) |",
    "| DT (argmax action) |",
    "| Q-guided BC",
    "| Q-guided DT",
  ):
    assert row in table, table
  per_game = (tmp_path / "report" / "baselines_results.md").read_text()
  # One run per method: the pairs are listed without a verdict (a verdict needs 2 runs).
  assert "q_guided_dt @ step 2" in per_game and "- No verdict where dt has 1 run (" in per_game
  assert "dt vs q_guided_dt" in per_game
