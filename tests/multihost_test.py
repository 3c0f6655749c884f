"""A multi-controller run: two `scaled_ql.pretrain` processes on this machine, 2 CPU devices
each, talking over gloo (the pod path, `jax.distributed`, with local addresses).

Checked against one process with 4 devices that holds both data shards (`train.data_shards = 2`):
the same global batches, so the same parameters up to the order of the all-reduce's sums.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.data import replay_fixtures as rf

# The gloo all-reduce sums the 4 devices' gradients in another order than one process does:
# measured 9.4e-8 after 5 steps of debug.gin.
PARAMS_ATOL = 1e-6


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
  return rf.collected_shards(str(tmp_path_factory.mktemp("data")), games="Breakout,Pong")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _pretrain_command(workdir, shard_dir, *bindings: str) -> list[str]:
  return [
    sys.executable, "-m", "scaled_ql.pretrain", f"--workdir={workdir}", "--gin_file=debug.gin",
    f"--gin_bindings=data.ReplayDataset.shard_dir = '{shard_dir}'",
    *(f"--gin_bindings={b}" for b in bindings),
  ]  # fmt: skip


def _env(num_devices: int) -> dict:
  return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={num_devices}"}


def start_processes(workdir, shard_dir, *bindings, num_processes=2, flags=()) -> list:
  """Starts the processes of one multi-host run; their output goes to {workdir}.p{i}.log."""
  port, processes = _free_port(), []
  for i in range(num_processes):
    log = open(f"{workdir}.p{i}.log", "w")
    command = _pretrain_command(workdir, shard_dir, *bindings) + [
      "--distributed", f"--coordinator_address=127.0.0.1:{port}",
      f"--num_processes={num_processes}", f"--process_id={i}", *flags,
    ]  # fmt: skip
    processes.append(subprocess.Popen(command, stdout=log, stderr=log, env=_env(2)))
  return processes


def wait_all(processes, workdir, timeout_s=300) -> list[str]:
  """Waits for every process to succeed; returns their logs."""
  deadline = time.time() + timeout_s
  try:
    for process in processes:
      process.wait(timeout=max(1, deadline - time.time()))
  finally:
    for process in processes:
      process.kill()
  logs = [open(f"{workdir}.p{i}.log").read() for i in range(len(processes))]
  for process, log in zip(processes, logs, strict=True):
    assert process.returncode == 0, log[-5000:]
  return logs


def restore_state(workdir, step: int) -> dict:
  """A checkpoint's whole TrainState as host arrays, whichever devices wrote it."""
  path = os.path.join(workdir, "checkpoints", str(step), "default")
  checkpointer = ocp.PyTreeCheckpointer()
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(
    lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
    checkpointer.metadata(path).item_metadata.tree,
  )
  return checkpointer.restore(
    path, restore_args=ocp.checkpoint_utils.construct_restore_args(target)
  )


def test_two_processes_train_resume_and_evaluate_like_one(shard_dir, tmp_path):
  two, one = str(tmp_path / "two"), str(tmp_path / "one")
  wait_all(start_processes(two, shard_dir, "train.num_grad_steps = 3"), two)
  logs = wait_all(start_processes(two, shard_dir, "train.num_grad_steps = 5"), two)
  for log in logs:  # Both processes restored the checkpoint written by both.
    assert "Resumed from the checkpoint at step 3." in log
  single = subprocess.run(
    _pretrain_command(one, shard_dir, "train.num_grad_steps = 5", "train.data_shards = 2"),
    capture_output=True, text=True, env=_env(4), timeout=300,
  )  # fmt: skip
  assert single.returncode == 0, single.stderr[-5000:]

  # -- The same training: every leaf of the state (parameters, Adam moments, target, step).
  two_state, one_state = restore_state(two, 5), restore_state(one, 5)
  assert jax.tree.structure(two_state) == jax.tree.structure(one_state)
  for a, b in zip(jax.tree.leaves(two_state), jax.tree.leaves(one_state), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=PARAMS_ATOL)
  moved = [np.abs(np.asarray(a) - np.asarray(b)).max()
           for a, b in zip(jax.tree.leaves(two_state["params"]),
                           jax.tree.leaves(restore_state(two, 3)["params"]), strict=True)]  # fmt: skip
  assert max(moved) > 100 * PARAMS_ATOL  # Steps 4-5 changed the parameters beyond the tolerance.

  # -- Process 0 alone writes the run's records: each step once, as the single process did.
  with open(os.path.join(two, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5]
  with open(os.path.join(one, "metrics.jsonl")) as f:
    single_losses = [json.loads(line)["loss"] for line in f if '"loss"' in line]
  np.testing.assert_allclose([r["loss"] for r in rows if "loss" in r], single_losses, rtol=1e-5)
  with open(os.path.join(two, "run_info.json")) as f:
    info = json.load(f)
  assert (info["num_processes"], info["data_shards"]) == (2, 2)
  # One TensorBoard file per invocation (process 0 of the first and of the resumed one).
  assert len(os.listdir(os.path.join(two, "tensorboard"))) == 2

  # -- Periodic evaluation ran with each process playing one game; process 0 wrote both.
  evals = sorted(os.listdir(os.path.join(two, "eval")))
  assert [e.split("_")[1] for e in evals] == ["000000003", "000000005"]
  for e in evals:
    with open(os.path.join(two, "eval", e, "results.json")) as f:
      assert list(json.load(f)["games"]) == ["Breakout", "Pong"]
  assert "eval: 1 episodes of 1 games" in logs[0] and "eval: 1 episodes of 1 games" in logs[1]
  assert [r["step"] for r in rows if "eval/Pong/return" in r] == [3, 5]


def test_a_dead_host_stops_the_other_within_the_heartbeat_timeout(shard_dir, tmp_path):
  workdir = str(tmp_path / "run")
  processes = start_processes(
    workdir, shard_dir, "train.num_grad_steps = 100000", "train.eval_fn = None",
    flags=["--heartbeat_timeout_s=5"],
  )  # fmt: skip
  metrics_file = os.path.join(workdir, "metrics.jsonl")
  try:
    for _ in range(1200):  # Both are training once process 0 logs a step.
      if os.path.exists(metrics_file) and os.path.getsize(metrics_file):
        break
      assert all(p.poll() is None for p in processes), open(f"{workdir}.p0.log").read()[-3000:]
      time.sleep(0.1)
    processes[1].send_signal(signal.SIGKILL)
    killed_at = time.time()
    returncode = processes[0].wait(timeout=120)
    waited_s = time.time() - killed_at
  finally:
    for process in processes:
      process.kill()
  log = open(f"{workdir}.p0.log").read()
  assert returncode != 0
  assert waited_s < 60, waited_s  # 5 s of heartbeats, then the coordinator's poll.
  assert "another task died" in log or "heartbeat" in log, log[-3000:]


def test_a_sigterm_to_one_host_checkpoints_every_host_at_one_step(shard_dir, tmp_path):
  workdir = str(tmp_path / "run")
  processes = start_processes(
    workdir, shard_dir, "train.num_grad_steps = 100000", "train.eval_fn = None"
  )
  metrics_file = os.path.join(workdir, "metrics.jsonl")
  try:
    for _ in range(1200):
      if os.path.exists(metrics_file) and os.path.getsize(metrics_file):
        break
      assert all(p.poll() is None for p in processes), open(f"{workdir}.p0.log").read()[-3000:]
      time.sleep(0.1)
    processes[1].send_signal(signal.SIGTERM)  # A preemption notice reaches one host.
    returncodes = [p.wait(timeout=120) for p in processes]
  finally:
    for process in processes:
      process.kill()
  logs = [open(f"{workdir}.p{i}.log").read() for i in range(2)]
  assert returncodes == [128 + signal.SIGTERM] * 2, logs[0][-3000:]
  steps = {int(re.search(r"SIGTERM: checkpointed step (\d+) of", log).group(1)) for log in logs}
  checkpoints = [int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()]
  assert len(steps) == 1 and max(checkpoints) == steps.pop()
