"""The studies' launchers on a tiny configuration: launch/scaling.sh, ablations.sh and
data_quality.sh train the embedded default's configurations (local.gin and the studies' gin
files) shrunk by BINDINGS to 2 steps on Breakout, beside the embedded default's own runs (as
launch/local.sh makes them), which each reuses; launch/transfer.sh makes an unseen game's data
and fine-tunes the default's run on it; then their bad input, refused in one line before any
run trains.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
# local.gin on the session's data in seconds (debug.gin's sizes; Breakout only: random Pong
# episodes outlast the tiny checkpoints, so none ends inside the data).
TINY = (
  "train.game_names = ['Breakout']; train.num_grad_steps = 2; train.global_batch_size = 8; "
  "train.log_every_steps = 1; train.checkpoint_every_steps = 2; "
  "data.ReplayDataset.pool_rows = 4096; data.ReplayDataset.chunk_rows = 256; "
  "data.ReplayDataset.num_io_threads = 1; evaluate.make_eval_fn.num_episodes = 1; "
  "evaluate.make_eval_fn.num_envs_per_game = 1; "
  "evaluate.make_eval_fn.protocol = @atari.Protocol(); atari.Protocol.max_episode_steps = 50"
)

# The same for fine-tuning (launch/transfer.sh passes the game itself), on half of each tiny
# checkpoint (local_finetune_transfer.gin's 10% of 400 rows would leave few n-step transitions).
TINY_TRANSFER = (
  TINY.removeprefix("train.game_names = ['Breakout']; ")
  + "; train.eval_every_steps = 0; data.ReplayDataset.row_fraction = 0.5"
)


@pytest.fixture(scope="module")
def study_env(shard_dir, tmp_path_factory) -> dict:
  """The launchers' environment: one WORKDIR for the module, the session's data, 1 seed."""
  return dict(
    os.environ,
    WORKDIR=str(tmp_path_factory.mktemp("studies")),
    SHARD_DIR=shard_dir,
    DATA_DIR=os.path.join(os.path.dirname(shard_dir), "replay"),
    PROTOCOL="custom",
    BINDINGS=TINY,
    SEEDS="0",
  )


@pytest.fixture(scope="module")
def default_runs(study_env) -> dict[str, str]:
  """WORKDIR/scaled_ql and WORKDIR/bc trained as launch/local.sh trains them (seed 0), shrunk
  by the same bindings; returns each run's metrics log and evaluations."""
  workdir = pathlib.Path(study_env["WORKDIR"])
  for name, gin_file in (("scaled_ql", "local.gin"), ("bc", "local_bc.gin")):
    bindings = [f"--gin_bindings={b.strip()}" for b in TINY.split(";")]
    result = subprocess.run(
      [sys.executable, "-m", "scaled_ql.pretrain", f"--workdir={workdir / name}",
       f"--gin_file={gin_file}", f"--gin_bindings=data.ReplayDataset.shard_dir = "
       f"'{study_env['SHARD_DIR']}'", "--gin_bindings=train.seed = 0", *bindings],
      capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-5000:]
  return {name: record(workdir / name) for name in ("scaled_ql", "bc")}


def record(run: pathlib.Path) -> str:
  """What training or evaluating a run again would change: its log and its evaluations."""
  evaluations = sorted(str(p.relative_to(run)) for p in (run / "eval").rglob("*"))
  return (run / "metrics.jsonl").read_text() + "\n".join(evaluations)


def assert_reused(study_env, default_runs) -> None:
  """The embedded default's runs were found finished and left as they were."""
  for name, before in default_runs.items():
    assert record(pathlib.Path(study_env["WORKDIR"]) / name) == before, f"{name} changed"


def launch(script: str, env: dict, **settings: str) -> subprocess.CompletedProcess:
  result = subprocess.run(["bash", str(ROOT / "launch" / script)], env={**env, **settings},
                          capture_output=True, text=True, timeout=900)  # fmt: skip
  return result


def launched(script: str, env: dict, **settings: str) -> str:
  """Runs a launcher that must succeed; returns its standard output."""
  result = launch(script, env, **settings)
  assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
  return result.stdout


def refused(script: str, env: dict, **settings: str) -> str:
  """Runs a launcher that must stop with one `error: ...` line; returns that line."""
  result = launch(script, env, **settings)
  assert result.returncode == 2, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
  errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
  assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr[-5000:]
  assert "Traceback" not in result.stderr and "== " not in result.stdout  # Nothing trained.
  return errors[0]


def run_info(workdir: pathlib.Path) -> dict:
  return json.loads((workdir / "run_info.json").read_text())


def test_scaling_trains_each_size_and_the_report_plots_them(study_env, default_runs):
  out = launched("scaling.sh", study_env, SIZES="small narrow")
  assert "Checked 4 planned runs: 2 exist" in out
  assert_reused(study_env, default_runs)
  workdir = pathlib.Path(study_env["WORKDIR"])
  # The small size keeps local.sh's names (its runs are reused); narrow is half as wide.
  params = {}
  for name in ("scaled_ql", "bc", "scaled_ql_narrow", "bc_narrow"):
    info = run_info(workdir / name)
    assert info["method"] == name.removesuffix("_narrow") and info["global_batch_size"] == 8
    widths = info["method_config"]["network"]["widths"]
    assert widths == ([8, 16, 32, 32] if "narrow" in name else None)  # None: small's own.
    params[name] = info["num_params"]
  assert params["scaled_ql"] == params["bc"] > params["scaled_ql_narrow"] == params["bc_narrow"]
  # The scaling plot got both sizes of both methods (IQM <= 0 after 2 steps: left out of the
  # fit, each size named in the report).
  notes = (workdir / "report" / "scaling" / "report.md").read_text()
  for method in ("Scaled QL", "BC"):
    for name in ("scaled_ql", "scaled_ql_narrow"):
      assert f"scaling fit {method} (schedule): size {params[name]} " in notes, notes
  assert (workdir / "report" / "scaling" / "scaling.png").stat().st_size > 0
  # The table: a column per method and size; the declared family, the largest vs the smallest.
  assert "| scaled_ql_narrow @ step 2 |" in out and "| bc @ step 2 |" in out
  assert ("Confirmatory family, declared before the results: scaled_ql vs scaled_ql_narrow and "
          "scaled_ql vs bc,") in out  # fmt: skip


def test_data_quality_trains_on_the_earliest_data_beside_all_of_it(study_env, default_runs):
  out = launched("data_quality.sh", study_env)
  assert_reused(study_env, default_runs)
  workdir = pathlib.Path(study_env["WORKDIR"])
  for name, method in (("scaled_ql_early", "scaled_ql"), ("bc_early", "bc")):
    assert run_info(workdir / name)["method"] == method
    assert run_info(workdir / name)["data_quality"] == "schedule_early"
    config = (workdir / name / "operative_config.gin").read_text()
    assert "ReplayDataset.suffixes = [0, 1]" in config
  assert run_info(workdir / "scaled_ql")["data_quality"] == "schedule"
  assert "| scaled_ql_early @ step 2 |" in out and "| bc_early @ step 2 |" in out
  assert ("scaled_ql_early-bc_early vs scaled_ql-bc (the margin of scaled_ql_early over "
          "bc_early against that of scaled_ql over bc)") in out  # fmt: skip
  # One seed: no verdicts, and the margin is among the pairs said to need more runs.
  assert "scaled_ql_early-bc_early vs scaled_ql-bc" in out.split("- No verdict where")[1]


def test_ablations_train_arms_beside_the_base(study_env, default_runs):
  out = launched("ablations.sh", study_env, ARMS="no_cql mse")
  assert_reused(study_env, default_runs)
  workdir = pathlib.Path(study_env["WORKDIR"])
  for arm in ("no_cql", "mse"):
    info = run_info(workdir / f"scaled_ql_{arm}")
    assert info["method"] == f"scaled_ql_{arm}"
  assert run_info(workdir / "scaled_ql_no_cql")["method_config"]["cql_alpha"] == 0.0
  assert run_info(workdir / "scaled_ql_mse")["method_config"]["td_loss"] == "MSE"
  assert ("Confirmatory family, declared before the results: scaled_ql vs scaled_ql_no_cql and "
          "scaled_ql vs scaled_ql_mse,") in out  # fmt: skip
  assert "| scaled_ql_mse @ step 2 |" in out


def test_transfer_makes_the_games_data_and_fine_tunes_pretrained_and_scratch(
  study_env, default_runs
):
  out = launched("transfer.sh", study_env, GAME="Pong", ROWS="400", BINDINGS=TINY_TRANSFER)
  workdir = pathlib.Path(study_env["WORKDIR"])
  transfer = workdir / "transfer" / "Pong"
  # The data as local.sh makes its own: random play, a behaviour agent, its play.
  assert sorted(os.listdir(transfer / "shards" / "Pong" / "1")) == ["00", "01", "02"]
  assert run_info(transfer / "behaviour")["game_names"] == ["Pong"]
  for init in ("pretrained", "scratch"):
    info = run_info(transfer / "offline" / "Pong" / f"{init}_seed0")
    assert info["init"] == init and info["game_names"] == ["Pong"]
    config = (transfer / "offline" / "Pong" / f"{init}_seed0" / "operative_config.gin").read_text()
    assert "ReplayDataset.suffixes = [0, 1, 2]" in config
  pretrained = run_info(transfer / "offline" / "Pong" / "pretrained_seed0")
  assert pretrained["init_from"]["source"] == str(workdir / "scaled_ql")
  assert "Confirmatory family, declared before the results: pretrained vs scratch," in out
  assert "| pretrained @ step 2 |" in out and "| scratch @ step 2 |" in out
  assert (workdir / "report" / "transfer" / "transfer_results.md").exists()
  assert_reused(study_env, default_runs)


def test_bad_input_is_refused_in_one_line_before_training(study_env, tmp_path):
  env = {**study_env, "WORKDIR": str(tmp_path)}
  os.symlink(study_env["SHARD_DIR"], tmp_path / "shards")
  env.pop("SHARD_DIR")
  assert "SIZES has 'huge'; valid: narrow small wide" in refused("scaling.sh", env,
                                                                 SIZES="narrow huge")  # fmt: skip
  assert "needs 2 or more" in refused("scaling.sh", env, SIZES="wide")
  assert "ARMS has 'no_cqll'; valid: " in refused("ablations.sh", env, ARMS="no_cql no_cqll")
  assert "SEEDS has 'one'" in refused("data_quality.sh", env, SEEDS="0 one")
  assert "SEEDS repeats 1" in refused("data_quality.sh", env, SEEDS="0 1 1")
  message = refused("scaling.sh", {**env, "WORKDIR": str(tmp_path / "empty")})
  assert "holds no converted data: run `bash launch/local.sh`" in message
  assert "is not a training run" in refused("transfer.sh", env, GAME="Pong")
  # A gin typo in any planned run, found before the first trains.
  message = refused("ablations.sh", env, BINDINGS=TINY + "; ScaledQL.cql_alfa = 1.0")
  assert "cql_alfa" in message
  # A run directory holding another configuration (here: another batch size).
  (tmp_path / "scaled_ql").mkdir()
  stored = {"method": "scaled_ql", "seed": 0, "global_batch_size": 16, "game_names": ["Breakout"]}
  (tmp_path / "scaled_ql" / "run_info.json").write_text(json.dumps(stored))
  message = refused("data_quality.sh", env)
  assert "scaled_ql holds a run of another configuration (global_batch_size: 16 -> 8)" in message
  assert "GAME: " in refused("transfer.sh", env, GAME="Pongg")
  assert "GAME=Breakout is one of the games" in refused("transfer.sh", env, GAME="Breakout")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["scaled_ql", "shards"]
