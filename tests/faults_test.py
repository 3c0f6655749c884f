"""The fault catalogue: each mistake of a user and each fault of the machine stops the command
with ONE line (`error: ...`, exit code 2, no traceback), before any compute where it can be
known before, and loses nothing. Every command runs as its user runs it (`python -m ...`).

Cases tested elsewhere, and not repeated here:
  - an unknown gin parameter, an unknown game, a game without converted data, a missing shard
    directory, a binding the trainer overrides (pretrain):
    end_to_end_test.py::test_bad_input_fails_before_compute
  - resuming with another model size (the projection width; refused by run_info.json, and
    without it by the checkpoint's shapes): end_to_end_test.py::test_a_changed_configuration_...
  - training that diverges (NaN): end_to_end_test.py::test_divergence_stops_the_run_and_keeps_...
  - a run killed (-9) during a step, a save or an evaluation: the rerun takes its lock over and
    resumes exactly: preemption_test.py::test_killed_anywhere_and_rerun_equals_an_uninterrupted_run
  - an unknown game or variant, a seen game offline, bad --init_from/--network_from (finetune):
    finetune_test.py::test_bad_input_is_one_line_before_any_work
  - evaluating a missing run or checkpoint: evaluate_test.py::test_cli_explains_a_missing_run_...
  - a report or comparison of no evaluated run: report_test.py::test_cli_fails_clearly_...,
    report_test.py::test_compare_refuses_a_directory_that_is_not_a_run
  - collect --policy=schedule without a policy run: collect_test.py::test_command_lines
  - every kind of corrupt DQN Replay file, in-process (truncated or corrupt gzip, pickles, wrong
    dtype or shape, NaN rewards, inconsistent add_count, another game's actions), and corrupt
    converted shards: data/replay_bad_input_test.py
  - the workdir lock's rules (stale heartbeat, a dead or reused pid, release): workdir_lock_test.py
"""

import gzip
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from typing import NamedTuple

import numpy as np
import pytest

from scaled_ql.data import dqn_replay, shards
from tests.data import replay_fixtures as rf
from tests.end_to_end_test import pretrain_args, run, run_failing


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> str:
  """`replay/` (DQN Replay files of Breakout and Pong, 2 suffixes each) and `shards/`."""
  root = str(tmp_path_factory.mktemp("data"))
  rf.collected_shards(root)
  return root


def no_run_written(workdir) -> bool:
  return not any(
    os.path.exists(os.path.join(workdir, name)) for name in ("checkpoints", "run_info.json")
  )


# ---------------------------------------------------------------------------------------------
# data_prep.convert: corrupt DQN Replay files, an empty or wrong directory.
# ---------------------------------------------------------------------------------------------


def _cut_in_half(path):
  data = open(path, "rb").read()
  open(path, "wb").write(data[: len(data) // 2])


def _empty(path):
  open(path, "wb").close()


def _plain_npy(path):  # What np.save writes, without the gzip around it.
  array = dqn_replay.load_array(path)
  with open(path, "wb") as f:
    np.save(f, array)


def _pickle(path):  # A pickled list where the .npy array should be, gzip-wrapped like the rest.
  array = dqn_replay.load_array(path)
  with gzip.open(path, "wb") as f:
    pickle.dump(array.tolist(), f)


@pytest.mark.parametrize(
  "name,corrupt,problem",
  [
    ("$store$_observation", _cut_in_half, "corrupt gzip data"),
    ("$store$_reward", _empty, "not a gzip-wrapped .npy file"),
    ("$store$_terminal", _plain_npy, "not a gzip-wrapped .npy file"),
    ("$store$_action", _pickle, "not a gzip-wrapped .npy file"),
  ],
  ids=["truncated_gzip", "zero_bytes", "npy_without_gzip", "pickle"],
)
def test_convert_names_a_corrupt_file_and_keeps_the_good_suffixes(
  data_root, tmp_path, name, corrupt, problem
):
  replay, shard_dir = tmp_path / "replay", str(tmp_path / "shards")
  shutil.copytree(os.path.join(data_root, "replay", "Breakout"), replay / "Breakout")
  path = dqn_replay.filename(dqn_replay.replay_dir(str(replay), "Breakout", 1), name, 1)
  corrupt(path)
  message = run_failing(
    "data_prep.convert", f"--replay_dir={replay}", f"--shard_dir={shard_dir}", "--games=Breakout"
  )
  assert message.startswith(f"error: {path}: ") and problem in message, message
  # Suffix 0 (converted before the bad one) is kept; nothing of suffix 1 is left behind.
  assert shards.read_meta(shards.suffix_dir(shard_dir, "Breakout", 1, 0))["num_rows"] > 0
  run_dir = os.path.join(shard_dir, "Breakout", "1")
  assert sorted(os.listdir(run_dir)) == ["00"]


def test_convert_of_an_empty_or_wrong_directory(data_root, tmp_path):
  shard_dir = str(tmp_path / "shards")
  os.makedirs(tmp_path / "empty")
  message = run_failing(
    "data_prep.convert", f"--replay_dir={tmp_path / 'empty'}", f"--shard_dir={shard_dir}",
    "--games=Breakout",
  )  # fmt: skip
  assert f"{tmp_path}/empty/Breakout/1/replay_logs: no checkpoints found" in message
  # One level too deep: the game's directory instead of the root holding the games.
  wrong = os.path.join(data_root, "replay", "Breakout")
  message = run_failing(
    "data_prep.convert", f"--replay_dir={wrong}", f"--shard_dir={shard_dir}", "--games=Breakout"
  )
  assert f"{wrong}/Breakout/1/replay_logs: no checkpoints found for game 'Breakout'" in message
  assert not os.path.exists(shard_dir) or not os.listdir(shard_dir)
  # --traceback (for a developer) shows where the error came from.
  shown = subprocess.run(
    [sys.executable, "-m", "data_prep.convert", f"--replay_dir={wrong}",
     f"--shard_dir={shard_dir}", "--games=Breakout", "--traceback"],
    capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert shown.returncode != 0 and "Traceback" in shown.stderr and "DataError" in shown.stderr


# ---------------------------------------------------------------------------------------------
# scaled_ql.pretrain: corrupt converted shards, an empty or wrong data directory, an unwritable
# workdir. Nothing is written to the workdir.
# ---------------------------------------------------------------------------------------------


def _truncate(path):
  os.truncate(path, os.path.getsize(path) - 8)


def _garble(path):
  open(path, "w").write('{"format_version": 1, "num_rows": ')  # Cut off mid-write, say.


# (A short observation file goes through the same check as a short action file: tested
# in-process by data/replay_bad_input_test.py::test_truncated_converted_shard.)
@pytest.mark.parametrize(
  "name,corrupt,problem",
  [
    ("action.i32", _truncate, "action.i32: 1592 bytes, expected 1600"),
    ("meta.json", _garble, "meta.json: not JSON"),
  ],
  ids=["short_row_file", "garbled_meta"],
)
def test_pretrain_names_a_corrupt_shard(data_root, tmp_path, name, corrupt, problem):
  shard_dir = tmp_path / "shards"
  shutil.copytree(os.path.join(data_root, "shards"), shard_dir)
  suffix = shards.suffix_dir(str(shard_dir), "Pong", 1, 1)
  corrupt(os.path.join(suffix, name))
  workdir = str(tmp_path / "run")
  message = run_failing("scaled_ql.pretrain", *pretrain_args(workdir, shard_dir))
  assert message.startswith(f"error: {suffix}/{problem}"), message
  assert no_run_written(workdir)


def test_pretrain_on_a_wrong_data_directory(data_root, tmp_path):
  # The DQN Replay root instead of the converted shards: no converted data in it. (An empty
  # directory is the same case; a missing one: end_to_end_test.py.)
  data_dir = os.path.join(data_root, "replay")
  workdir = str(tmp_path / "run")
  message = run_failing("scaled_ql.pretrain", *pretrain_args(workdir, data_dir))
  assert f"{data_dir}: no converted data for runs [1] for game 'Breakout'" in message
  assert "python -m data_prep.convert" in message and no_run_written(workdir)


def test_an_unwritable_workdir(data_root, tmp_path):
  # A directory under a regular file: unwritable for root too (tests may run as root).
  (tmp_path / "file").write_text("")
  workdir = str(tmp_path / "file" / "run")
  message = run_failing(
    "scaled_ql.pretrain", *pretrain_args(workdir, os.path.join(data_root, "shards"))
  )
  assert f"The workdir {workdir} is not writable (Not a directory)" in message


# ---------------------------------------------------------------------------------------------
# Unknown games, and a checkpoint of another model size.
# ---------------------------------------------------------------------------------------------


def test_collect_an_unknown_game(tmp_path):
  message = run_failing("data_prep.collect", f"--output_dir={tmp_path}", "--games=Breakout,Pongg")
  assert message.startswith("error: Unknown Atari game 'Pongg'") and not os.listdir(tmp_path)


def test_evaluate_an_unknown_game(trained_run):
  message = run_failing("scaled_ql.evaluate", f"--workdir={trained_run.workdir}", "--games=Pongg")
  assert "no policy head for ['Pongg']" in message and "['Breakout', 'Pong']" in message


def test_evaluate_a_checkpoint_of_another_model_size(trained_run, tmp_path):
  # The run's record says one network width, its checkpoint holds another (e.g. checkpoints
  # copied between runs): the differing parameters are named, nothing is evaluated.
  workdir = tmp_path / "run"
  shutil.copytree(trained_run.workdir, workdir)
  info = json.loads((workdir / "run_info.json").read_text())
  info["method_config"]["network"]["widths"] = [16, 16, 16, 16]
  (workdir / "run_info.json").write_text(json.dumps(info))
  message = run_failing("scaled_ql.evaluate", f"--workdir={workdir}", "--num_episodes=1")
  assert "The checkpoint at step 3" in message and "does not match the configured model" in message
  assert "checkpoint (8,) vs configured (16,)" in message and not (workdir / "eval").exists()


# ---------------------------------------------------------------------------------------------
# A workdir in use: a second process is refused; a killed holder does not block the rerun.
# ---------------------------------------------------------------------------------------------


class TrainedRun(NamedTuple):
  """A run trained after a second process was refused its workdir and the first was killed."""

  workdir: str
  holder: dict  # The first process's lock.
  refused: str  # The second process's error line.
  rerun: str  # The stderr of the rerun after the kill.


@pytest.fixture(scope="module")
def trained_run(data_root, tmp_path_factory) -> TrainedRun:
  workdir = str(tmp_path_factory.mktemp("in_use") / "run")
  args = pretrain_args(
    workdir, os.path.join(data_root, "shards"), "train.eval_fn = None",
    "train.num_grad_steps = 3",
  )  # fmt: skip
  long_run = [sys.executable, "-m", "scaled_ql.pretrain", *args,
              "--gin_bindings=train.num_grad_steps = 100000"]  # fmt: skip
  first = subprocess.Popen(long_run, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  lock = os.path.join(workdir, "LOCK")
  try:
    for _ in range(1200):
      if os.path.exists(lock) and os.path.getsize(lock):
        break
      assert first.poll() is None, "the first run ended before it took the lock"
      time.sleep(0.1)
    else:
      raise AssertionError("the first run took no lock in 120 s")
    # Stopped, it holds the lock as it would training (a live pid, a recent heartbeat), and
    # leaves the CPU to the second process.
    first.send_signal(signal.SIGSTOP)
    holder = json.loads(open(lock).read())
    refused = run_failing("scaled_ql.pretrain", *args)
    assert json.loads(open(lock).read()) == holder  # The refused process left it alone.
  finally:
    first.kill()  # SIGKILL: no clean-up of any kind; the lock file stays.
    first.wait()
  assert os.path.exists(lock)
  rerun = run("scaled_ql.pretrain", *args).stderr
  return TrainedRun(workdir, holder, refused, rerun)


def test_a_second_run_on_a_workdir_in_use_is_refused_naming_the_holder(trained_run):
  holder, message = trained_run.holder, trained_run.refused
  assert message.startswith(f"error: The workdir {trained_run.workdir} is in use by another run")
  assert f"process {holder['pid']} on {holder['host']}, since {holder['started']}" in message


def test_a_killed_runs_lock_does_not_block_the_rerun(trained_run):
  assert f"process {trained_run.holder['pid']} on" in trained_run.rerun
  assert "is no longer running" in trained_run.rerun
  assert sorted(os.listdir(os.path.join(trained_run.workdir, "checkpoints"))) == ["3"]
  assert not os.path.exists(os.path.join(trained_run.workdir, "LOCK"))  # Released at the end.


# ---------------------------------------------------------------------------------------------
# The disk fills while a checkpoint is written.
# ---------------------------------------------------------------------------------------------

# In a mount namespace of its own (no root needed where user namespaces are allowed): a small
# tmpfs holding a copy of the run, filled up but for 96 KB (room for the run's small files,
# not for a checkpoint); the run, then, with the space freed, the same command again.
_DISK_FULL_SCRIPT = """
set -u
small=$1 run=$2 out=$3; shift 3
mount -t tmpfs -o size=8m tmpfs "$small" || exit 90
cp -a "$run" "$small/run"
dd if=/dev/zero of="$small/filler" bs=4k 2>/dev/null
truncate -s -96K "$small/filler"
"$@" > "$out/full.log" 2>&1; echo $? > "$out/full.rc"
ls "$small/run/checkpoints" > "$out/full.ls"
rm "$small/filler"
"$@" > "$out/rerun.log" 2>&1; echo $? > "$out/rerun.rc"
cp -a "$small/run" "$out/run"
"""


def _can_mount_tmpfs() -> bool:
  try:
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30)
  except FileNotFoundError:
    return False
  return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="no user or mount namespaces (unshare -rm)")
def test_a_full_disk_stops_the_run_and_keeps_the_last_checkpoint(trained_run, data_root, tmp_path):
  small = tmp_path / "small"
  small.mkdir()
  command = [
    sys.executable, "-m", "scaled_ql.pretrain",
    *pretrain_args(small / "run", os.path.join(data_root, "shards"), "train.eval_fn = None",
                   "train.num_grad_steps = 6"),
  ]  # fmt: skip
  done = subprocess.run(
    ["unshare", "-rm", "bash", "-c", _DISK_FULL_SCRIPT, "-", small, trained_run.workdir, tmp_path,
     *command], capture_output=True, text=True, timeout=600,
  )  # fmt: skip
  assert done.returncode == 0, done.stderr[-3000:]
  full = (tmp_path / "full.log").read_text()
  assert (tmp_path / "full.rc").read_text().strip() == "2", full[-5000:]
  assert "Traceback" not in full, full[-5000:]
  message = full[full.rindex("error: ") :]
  assert message.startswith(
    f"error: The checkpoint at step 6 could not be written to {small}/run/"
  ), message
  assert "No space left on device" in message and "checkpoint at step 3 is intact" in message
  assert "6" not in (tmp_path / "full.ls").read_text().split()
  # The same command, with room again, resumes from step 3 and finishes.
  rerun = (tmp_path / "rerun.log").read_text()
  assert (tmp_path / "rerun.rc").read_text().strip() == "0", rerun[-5000:]
  assert "Resumed from the checkpoint at step 3." in rerun
  assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["3", "6"]
  rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
  assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]
