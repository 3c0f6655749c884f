"""`python -m scaled_ql.finetune` as its users run it: online on real Breakout variants."""

import csv
import json
import os
import subprocess
import sys

import pytest

from scaled_ql import finetune as finetune_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_NETWORK = (
  "NetworkConfig.torso = 'small'", "NetworkConfig.widths = (8, 8, 8, 8)",
  "NetworkConfig.projection_dim = 16", "NetworkConfig.spatial_embedding_features = 2",
)  # fmt: skip


def finetune(cwd, *args: str, ok: bool = True, gin_file: str = "finetune_online_debug.gin"):
  """Runs the CLI in `cwd` (where no embedded-default run exists) with a debug gin file."""
  out = subprocess.run(
    [sys.executable, "-m", "scaled_ql.finetune", f"--gin_file={gin_file}", *args],
    capture_output=True, text=True, timeout=600, cwd=cwd,
  )  # fmt: skip
  if ok:
    assert out.returncode == 0, out.stderr[-5000:]
  else:
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-5000:]
  return out


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
  """A scratch online run on Breakout (variant 0): the 'pretrained' run of these tests."""
  root = tmp_path_factory.mktemp("finetune")
  workdir = str(root / "source")
  finetune(root, "--game=Breakout", "--variant=0", "--init_from=none", f"--workdir={workdir}",
           *(f"--gin_bindings={b}" for b in TINY_NETWORK))  # fmt: skip
  return root, workdir


def test_online_finetuning_from_a_run_on_a_variant_completes_and_resumes(source_run):
  root, source = source_run
  workdir = str(root / "finetuned")
  out = finetune(root, "--game=Breakout", "--variant=1", f"--init_from={source}",
                 f"--workdir={workdir}")  # fmt: skip
  assert "parameters carried over for ['Breakout']" in out.stderr
  with open(os.path.join(workdir, "run_info.json")) as f:
    info = json.load(f)
  # The network came from the source run's record; the run is labelled for reports.
  assert info["method_config"]["network"]["widths"] == [8, 8, 8, 8]
  assert info["init"] == "pretrained" and info["phase"] == "online_finetune"
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert max(r.get("online/env_steps", 0) for r in rows) == 100 + 40 * 2
  evaluations = os.listdir(os.path.join(workdir, "eval"))
  assert evaluations and all("_v1" in tag for tag in evaluations)  # Evaluated on the variant.
  again = finetune(root, "--game=Breakout", "--variant=1", f"--init_from={source}",
                   f"--workdir={workdir}", "--gin_bindings=train.num_grad_steps = 50")  # fmt: skip
  assert "Resumed from the checkpoint at step 40" in again.stderr


def test_bad_input_is_one_line_before_any_work(source_run, tmp_path):
  root, source = source_run
  cases = [
    (["--game=Breakoutt"], "Breakoutt"),
    (["--game=Breakout", "--variant=99"], "Valid variants: 0 (mode 0, difficulty 0)"),
    (["--game=Breakout", "--variant=1"], "bash launch/local.sh"),  # No default run here.
    (["--game=Breakout", "--mode=offline", f"--init_from={source}"], "--allow_seen_game"),
    (["--game=Pong", "--mode=offline", "--init_from=none"], "data.ReplayDataset.shard_dir"),
    (["--game=Breakout", "--init_from=none", f"--network_from={tmp_path}/x"], "--network_from="),
    (["--game=Breakout", f"--init_from={source}", f"--network_from={source}"], "is for --init"),
  ]
  for args, expected in cases:
    mode = "offline" if "--mode=offline" in args else "online"
    out = finetune(tmp_path, *args, f"--workdir={tmp_path / 'run'}", ok=False,
                   gin_file=f"finetune_{mode}_debug.gin")  # fmt: skip
    assert expected in out.stderr, (args, out.stderr[-2000:])
  assert not os.path.exists(tmp_path / "run")


def test_scratch_builds_the_network_of_the_run_it_is_compared_with(source_run):
  root, source = source_run
  workdir = str(root / "scratch")
  finetune(root, "--game=Breakout", "--variant=1", "--init_from=none", f"--network_from={source}",
           f"--workdir={workdir}", "--gin_bindings=train.num_grad_steps = 4")  # fmt: skip
  with open(os.path.join(workdir, "run_info.json")) as f:
    info = json.load(f)
  assert info["init"] == "scratch" and info["method_config"]["network"]["widths"] == [8, 8, 8, 8]
  # The same command again: the run is finished; it says so and shows what it logged last.
  again = finetune(root, "--game=Breakout", "--variant=1", "--init_from=none",
                   f"--network_from={source}", f"--workdir={workdir}",
                   "--gin_bindings=train.num_grad_steps = 4")  # fmt: skip
  assert "already holds the finished run (step 4)" in again.stderr
  assert "Done: {'online/env_steps': 108.0" in again.stderr  # 100 warm-up + 4 x 2.


def test_a_cpu_model_gets_the_miniature_budget():
  assert finetune_cli.default_gin_file("online", {"torso": "small"}) == "local_finetune_online.gin"
  assert finetune_cli.default_gin_file("offline", {"torso": "tiny"}) == "local_finetune_offline.gin"
  assert finetune_cli.default_gin_file("online", {"torso": "resnet101"}) == "finetune_online.gin"
  assert finetune_cli.default_gin_file("offline", None) == "finetune_offline.gin"


def test_launch_script_compares_pretrained_and_scratch_offline_and_online(source_run):
  """launch/finetune.sh: collects an unseen game's data, fine-tunes pretrained and scratch
  offline on it and online on a variant, and reports; offline on real ALE Pong's data."""
  root, source = source_run
  workdir = root / "launch"
  env = dict(os.environ, WORKDIR=str(workdir), INIT_FROM=source, ONLINE="Breakout:1",
             OFFLINE="Pong", SEEDS="0", ROWS="600", GIN_ONLINE="finetune_online_debug.gin",
             GIN_OFFLINE="finetune_offline_debug.gin", PROTOCOL="custom")  # fmt: skip
  out = subprocess.run(["bash", os.path.join(REPO, "launch", "finetune.sh")], env=env,
                       capture_output=True, text=True, timeout=900)  # fmt: skip
  assert out.returncode == 0, out.stderr[-5000:]
  assert (
    "new games (fresh heads): ['Pong']" in out.stderr
  )  # Pretrained offline: a fresh head for Pong.
  for mode, name in (("offline", "Pong"), ("online", "Breakout_v1")):
    for init in ("pretrained", "scratch"):
      with open(workdir / mode / name / f"{init}_seed0" / "run_info.json") as f:
        info = json.load(f)
      assert info["phase"] == f"{mode}_finetune" and info["init"] == init
      assert info["method_config"]["network"]["widths"] == [8, 8, 8, 8]  # The same network.
  with open(workdir / "report" / "finetune_offline.csv") as f:
    (offline,) = list(csv.DictReader(f))
  with open(workdir / "report" / "finetune_online.csv") as f:
    (online,) = list(csv.DictReader(f))
  assert (offline["Game"], offline["Variant"]) == ("Pong", "0")
  assert (online["Game"], online["Variant"]) == ("Breakout", "1")
  for row in (offline, online):
    assert row["pretrained runs"] == "1" and row["scratch runs"] == "1"
  assert (workdir / "report" / "finetune_curves.png").stat().st_size > 0
  assert "finetune_online" in out.stdout and "| Breakout | 1 |" in out.stdout
  # A selection of the data too small to hold a transition: one line, nothing written.
  empty = finetune(root, "--mode=offline", "--game=Pong", "--init_from=none",
                   f"--workdir={root / 'empty'}",
                   f"--gin_bindings=data.ReplayDataset.shard_dir = '{workdir}/data/shards'",
                   "--gin_bindings=data.ReplayDataset.row_fraction = 0.001",
                   gin_file="finetune_offline_debug.gin", ok=False)  # fmt: skip
  assert "Pong: no valid transitions" in empty.stderr
  assert not os.path.exists(root / "empty" / "run_info.json")
