"""The cost of running as a multi-controller program: 2 processes x 1 device against 1 process x 2
devices, the same global batch, the same data, measured in the same run.

    python benchmarks/multihost.py [--num_grad_steps=300] [--global_batch_size=32] [--rounds=2]

Both train `debug.gin`'s small network with `scaled_ql.pretrain` on random-play data collected
from real ALE and converted (Breakout, Pong). The single process holds both data shards
(`train.data_shards = 2`), so both make the same global batches. Throughput is the trainer's
own logged steps/s, median over the logging windows after the first (which holds the
compilation). The two settings alternate for `--rounds` rounds, so load from other processes hits
both alike. On one CPU machine this measures overhead (gloo collectives between processes, two
Python drivers on 2 cores), not a speed-up.

Last line: `RESULT multihost_overhead <1-process steps/s / 2-process steps/s>` (1.0: no overhead).
"""

import json
import os
import socket
import subprocess
import sys
import tempfile

import numpy as np
from absl import app, flags

flags.DEFINE_integer("num_grad_steps", 300, "Steps of each training run.")
flags.DEFINE_integer("global_batch_size", 32, "Examples per step over both devices.")
flags.DEFINE_integer("rounds", 2, "Alternating rounds of the two settings.")
FLAGS = flags.FLAGS
GAMES = "Breakout,Pong"


def _run(command: list[str], env: dict | None = None) -> None:
  result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
  if result.returncode:
    sys.exit(f"{' '.join(command[:3])} failed:\n{result.stderr[-3000:]}")


def _collect_and_convert(root: str) -> str:
  py = sys.executable
  _run([py, "-m", "data_prep.collect", f"--output_dir={root}/replay", f"--games={GAMES}", "--runs=1",
        "--num_checkpoints=2", "--checkpoint_size=1000", "--policy=random", "--seed=0"])  # fmt: skip
  _run([py, "-m", "data_prep.convert", f"--replay_dir={root}/replay", f"--shard_dir={root}/shards",
        f"--games={GAMES}", "--runs=1"])  # fmt: skip
  return f"{root}/shards"


def _pretrain(workdir: str, shard_dir: str, *extra: str) -> list[str]:
  log_every_steps = max(1, FLAGS.num_grad_steps // 6)
  return [
    sys.executable, "-m", "scaled_ql.pretrain", f"--workdir={workdir}", "--gin_file=debug.gin",
    f"--gin_bindings=data.ReplayDataset.shard_dir = '{shard_dir}'",
    f"--gin_bindings=train.num_grad_steps = {FLAGS.num_grad_steps}",
    f"--gin_bindings=train.global_batch_size = {FLAGS.global_batch_size}",
    f"--gin_bindings=train.log_every_steps = {log_every_steps}",
    f"--gin_bindings=train.checkpoint_every_steps = {FLAGS.num_grad_steps}",
    "--gin_bindings=train.eval_fn = None", *extra,
  ]  # fmt: skip


def _env(num_devices: int) -> dict:
  return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={num_devices}"}


def _steps_per_s(workdir: str) -> float:
  """Median of the logged steps/s after the first window (compilation)."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rates = [row["steps_per_s"] for row in map(json.loads, f) if "steps_per_s" in row]
  return float(np.median(rates[1:]))


def one_process(workdir: str, shard_dir: str) -> float:
  _run(_pretrain(workdir, shard_dir, "--gin_bindings=train.data_shards = 2"), _env(2))
  return _steps_per_s(workdir)


def two_processes(workdir: str, shard_dir: str) -> float:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  distributed = ["--distributed", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2"]
  log_paths = [f"{workdir}.p{i}.log" for i in range(2)]  # Files, not pipes: one could fill.
  processes = []
  for i, log_path in enumerate(log_paths):
    with open(log_path, "w") as log:
      command = _pretrain(workdir, shard_dir, *distributed, f"--process_id={i}")
      processes.append(subprocess.Popen(command, stdout=log, stderr=log, env=_env(1)))
  for process, log_path in zip(processes, log_paths, strict=True):
    if process.wait(timeout=3600):
      with open(log_path) as f:
        sys.exit(f"a process of the 2-process run failed:\n{f.read()[-3000:]}")
  return _steps_per_s(workdir)


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as root:
    print("collecting and converting random-play data ...", flush=True)
    shard_dir = _collect_and_convert(root)
    one, two = [], []
    for r in range(FLAGS.rounds):
      one.append(one_process(f"{root}/one_{r}", shard_dir))
      two.append(two_processes(f"{root}/two_{r}", shard_dir))
      print(f"round {r}: 1 process x 2 devices {one[-1]:.1f} steps/s, "
            f"2 processes x 1 device {two[-1]:.1f} steps/s", flush=True)  # fmt: skip
  one_rate, two_rate = float(np.mean(one)), float(np.mean(two))
  print(f"\n| setting (global batch {FLAGS.global_batch_size}) | steps/s |\n|---|---|")
  print(f"| 1 process x 2 devices | {one_rate:.1f} |\n| 2 processes x 1 device | {two_rate:.1f} |")
  print(f"RESULT multihost_overhead {one_rate / two_rate:.3f}")


if __name__ == "__main__":
  app.run(main)
