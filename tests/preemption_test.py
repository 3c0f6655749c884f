"""Preemption: `kill -9` a run during a step, during a checkpoint save and during an evaluation,
rerun the same command each time, and the finished run equals an uninterrupted one bitwise; a
SIGTERM (a preemption notice) checkpoints the current step first, so the rerun loses nothing.

A checkpoint cut off mid-save is never used (orbax writes into a temporary directory and
renames it when complete); the metrics hold every step once; every periodic evaluation exists.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.data import replay_fixtures as rf

NUM_STEPS = 48
BINDINGS = (
  f"train.num_grad_steps = {NUM_STEPS}",
  "train.checkpoint_every_steps = 4",
  "train.eval_every_steps = 12",
  "atari.Protocol.max_episode_steps = 400",  # An evaluation lasts long enough to be hit.
)


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
  return rf.collected_shards(str(tmp_path_factory.mktemp("data")), games="Breakout,Pong")


def command(workdir, shard_dir) -> list[str]:
  return [
    sys.executable, "-m", "scaled_ql.pretrain", f"--workdir={workdir}", "--gin_file=debug.gin",
    f"--gin_bindings=data.ReplayDataset.shard_dir = '{shard_dir}'",
    *(f"--gin_bindings={b}" for b in BINDINGS),
  ]  # fmt: skip


def completed_steps(workdir) -> list[int]:
  directory = os.path.join(workdir, "checkpoints")
  return (
    sorted(int(d) for d in os.listdir(directory) if d.isdigit()) if os.path.isdir(directory) else []
  )


def saving(workdir) -> bool:
  """A checkpoint is being written: orbax's temporary directory exists."""
  directory = os.path.join(workdir, "checkpoints")
  return os.path.isdir(directory) and any("tmp" in d for d in os.listdir(directory))


def metrics_rows(workdir) -> list[dict]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.endswith("\n")]


def kill_when(workdir, shard_dir, condition) -> int | None:
  """Runs the command and SIGKILLs it as soon as `condition()` holds; returns the last complete
  checkpoint's step at that moment."""
  process = subprocess.Popen(
    command(workdir, shard_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  try:
    deadline = time.time() + 300
    while time.time() < deadline:
      assert process.poll() is None, "the run ended before the moment to kill it came"
      if condition():
        steps = completed_steps(workdir)
        process.kill()
        return steps[-1] if steps else None
      time.sleep(0.005)
    raise AssertionError("the moment to kill never came")
  finally:
    process.kill()
    process.wait()


def final_state(workdir) -> list[np.ndarray]:
  tree = ocp.PyTreeCheckpointer().restore(
    os.path.join(workdir, "checkpoints", str(NUM_STEPS), "default")
  )
  return [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]


@pytest.fixture(scope="module")
def straight(shard_dir, tmp_path_factory):
  """The uninterrupted run."""
  workdir = str(tmp_path_factory.mktemp("straight") / "run")
  subprocess.run(command(workdir, shard_dir), check=True, capture_output=True, timeout=600)
  return workdir


def test_killed_anywhere_and_rerun_equals_an_uninterrupted_run(shard_dir, straight, tmp_path):
  killed = str(tmp_path / "killed")

  def mid_step():  # Step 14 is logged: inside the loop, between the checkpoints 12 and 16.
    return len(metrics_rows(killed)) >= 14

  def mid_save():
    return saving(killed)

  def mid_eval():  # Checkpoint 12k is complete, and its evaluation and step 12k+1 not yet logged.
    rows = metrics_rows(killed)
    last = rows[-1]["step"] if rows else 0
    evaluated = any("eval/Pong/return" in r for r in rows if r["step"] == last)
    return last % 12 == 0 and last in completed_steps(killed) and not evaluated

  kills = [kill_when(killed, shard_dir, moment) for moment in (mid_step, mid_save, mid_eval)]
  assert kills[2] % 12 == 0, kills  # The last kill came during an evaluation.
  final = subprocess.run(command(killed, shard_dir), capture_output=True, text=True, timeout=600)
  assert final.returncode == 0, final.stderr[-5000:]
  assert f"Resumed from the checkpoint at step {kills[-1]}." in final.stderr

  # -- Bitwise the same state (parameters, optimizer, target network, step).
  for a, b in zip(final_state(killed), final_state(straight), strict=True):
    np.testing.assert_array_equal(a, b)
  # -- Every step's metrics once, in order; every evaluation done, as in the uninterrupted run.
  with open(os.path.join(killed, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert [r["step"] for r in rows if "loss" in r] == list(range(1, NUM_STEPS + 1))
  assert sorted(os.listdir(os.path.join(killed, "eval"))) == sorted(
    os.listdir(os.path.join(straight, "eval"))
  )
  assert [r["step"] for r in rows if "eval/Pong/return" in r] == [12, 24, 36, 48]


def test_sigterm_checkpoints_the_current_step_and_the_rerun_continues_from_it(
  shard_dir, straight, tmp_path
):
  workdir, log_path = str(tmp_path / "run"), str(tmp_path / "run.log")
  with open(log_path, "w") as log:
    process = subprocess.Popen(command(workdir, shard_dir), stdout=log, stderr=log)
  try:
    for _ in range(30000):
      if len(metrics_rows(workdir)) >= 6:  # Between the checkpoints 4 and 8.
        break
      assert process.poll() is None, "the run ended before the signal"
      time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=120)
  finally:
    process.kill()
  with open(log_path) as f:
    stderr = f.read()
  assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
  stopped_at = int(re.search(r"SIGTERM: checkpointed step (\d+) of", stderr).group(1))
  assert 6 <= stopped_at < NUM_STEPS and completed_steps(workdir)[-1] == stopped_at
  assert "Traceback" not in stderr and not os.path.exists(os.path.join(workdir, "LOCK"))
  rerun = subprocess.run(command(workdir, shard_dir), capture_output=True, text=True, timeout=600)
  assert f"Resumed from the checkpoint at step {stopped_at}." in rerun.stderr
  for a, b in zip(final_state(workdir), final_state(straight), strict=True):
    np.testing.assert_array_equal(a, b)
