r"""Sampling throughput and memory: scaled_ql.data.ReplayDataset vs dopamine's replay buffer.

  .venv/bin/python benchmarks/data_throughput.py            # 3 checkpoints of 1,000,000 rows
  .venv/bin/python benchmarks/data_throughput.py --capacity=100000 --num_windows=3  # quick look

Data: DQN-Replay-format files written by dopamine's own `OutOfGraphReplayBuffer.save` from real
ALE frames (a random policy in Breakout, Pong and MsPacman with the DQN Replay protocol, real
episode ends and clipped rewards; the recorded transitions are cycled to fill each 1M-row
checkpoint; dopamine's writer with gzip level 1 instead of 9, same format). Cached in
benchmarks/.cache/ with the converted shards. Each sampler runs in its own process (so that its
peak RSS is its own); both stay alive and take turns in --num_windows windows of
--window_seconds each, so that both see the same load from other jobs on this shared machine:

  ours:     ReplayDataset over all checkpoints (batch 512, n=3, default pool): time to first
            batch, then transitions/s of `batch(step)` calls (pool refills included), peak RSS.
  dopamine: OutOfGraphReplayBuffer.load of one checkpoint, then `sample_transition_batch(512)`
            (n=3); load time and peak RSS.

Rates are the median over windows; the ratio is of the medians.

The last line is `RESULT data_throughput_vs_dopamine <ours transitions/s / dopamine's>`.
"""

import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

_CACHE_DIR = flags.DEFINE_string(
  "cache_dir",
  os.path.join(os.path.dirname(os.path.abspath(__file__)), ".cache", "data_throughput"),
  "Where generated DQN Replay files and shards are kept between runs.",
)
_CAPACITY = flags.DEFINE_integer("capacity", 1_000_000, "Rows per checkpoint.")
_NUM_CHECKPOINTS = flags.DEFINE_integer("num_checkpoints", 3, "Checkpoints generated and sampled.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 512, "Transitions per batch.")
_N_STEP = flags.DEFINE_integer("n_step", 3, "n-step horizon.")
_WINDOW_SECONDS = flags.DEFINE_float("window_seconds", 3.0, "Length of one timing window.")
_NUM_WINDOWS = flags.DEFINE_integer("num_windows", 8, "Timing windows per sampler (alternating).")
_ROLE = flags.DEFINE_enum("role", "main", ["main", "generate", "ours", "dopamine"], "Internal.")

GAME = "Breakout"
REAL_GAMES = ("Breakout", "Pong", "MsPacman")


def _peak_rss_gb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def _paths():
  root = os.path.join(_CACHE_DIR.value, f"cap{_CAPACITY.value}_k{_NUM_CHECKPOINTS.value}")
  return root, os.path.join(root, "dqn"), os.path.join(root, "shards")


# --------------------------------------------------------------------------------------------------
# Roles (each runs in its own process).


def _record_real_transitions(steps_per_game: int = 12_000):
  """Returns real ALE transitions (frame, action, clipped reward, terminal), episodes intact."""
  from scaled_ql import atari

  frames, actions, rewards, terminals = [], [], [], []
  for i, game in enumerate(REAL_GAMES):
    with atari.VectorEnv(game, num_envs=1, seed=i) as env:
      obs, rng = env.reset(), np.random.default_rng(i)
      for _ in range(steps_per_game):
        action = rng.integers(env.num_actions, size=1)
        next_obs, reward, terminated, truncated = env.step(action)
        frames.append(obs[0, :, :, -1])
        actions.append(int(action[0]))
        rewards.append(float(np.clip(reward[0], -1, 1)))
        terminals.append(bool(terminated[0] or truncated[0]))
        obs = next_obs
    terminals[-1] = True  # close the last episode of each game
  return np.stack(frames), np.array(actions), np.array(rewards), np.array(terminals)


def generate() -> None:
  """Writes `num_checkpoints` full checkpoints with dopamine's writer (contiguous add_counts)."""
  from absl import logging

  logging.set_verbosity(logging.WARNING)
  import functools
  import gzip
  import types

  from dopamine.tf.replay_memory import circular_replay_buffer

  # dopamine's writer unchanged except gzip level 1 instead of 9: identical format, larger files,
  # several times faster to write 7 GB of frames on 2 shared cores.
  circular_replay_buffer.gzip = types.SimpleNamespace(
    GzipFile=functools.partial(gzip.GzipFile, compresslevel=1)
  )
  OutOfGraphReplayBuffer = circular_replay_buffer.OutOfGraphReplayBuffer
  _, dqn_dir, _ = _paths()
  replay_dir = os.path.join(dqn_dir, GAME, "1", "replay_logs")
  os.makedirs(replay_dir, exist_ok=True)
  frames, actions, rewards, terminals = _record_real_transitions()
  print(f"recorded {len(frames)} real transitions, {terminals.sum()} episodes", flush=True)
  capacity = _CAPACITY.value
  buf = OutOfGraphReplayBuffer((84, 84), 4, capacity, 32, update_horizon=_N_STEP.value)
  t, start = 0, time.time()  # recorded transitions are cycled in order
  for k in range(_NUM_CHECKPOINTS.value):
    while int(buf.add_count) < (k + 1) * capacity - 4:
      i = t % len(frames)
      buf.add(frames[i], actions[i], rewards[i], terminals[i])
      t += 1
    buf.save(replay_dir, k)
    print(
      f"saved checkpoint {k} (add_count {int(buf.add_count)}) at {time.time() - start:.0f}s",
      flush=True,
    )
  with open(os.path.join(_paths()[0], "generated.json"), "w") as f:
    json.dump({"checkpoints": _NUM_CHECKPOINTS.value, "capacity": capacity}, f)


def _serve_windows(sample, setup: dict) -> None:
  """Protocol with the driver: print setup figures, then time `sample` for one window per "GO".

  Both samplers live at once and take turns (ours, dopamine, ours, ...), so that both see the
  same load from other processes on this shared machine; each window's rate is reported.
  """
  print("JSON " + json.dumps(setup), flush=True)
  for command in sys.stdin:
    if command.strip() != "GO":
      break
    batches, start = 0, time.time()
    while time.time() - start < _WINDOW_SECONDS.value:
      sample()
      batches += 1
    rate = batches * _BATCH_SIZE.value / (time.time() - start)
    print("JSON " + json.dumps({"rate": rate}), flush=True)
  print("JSON " + json.dumps({"peak_rss_gb": _peak_rss_gb()}), flush=True)


def serve_ours() -> None:
  from scaled_ql.data import ReplayDataset

  _, _, shard_dir = _paths()
  start = time.time()
  ds = ReplayDataset(
    shard_dir, [GAME], runs=[1], suffixes="all", n_step=_N_STEP.value, gamma=0.99, seed=0,
    local_batch_size=_BATCH_SIZE.value,
  )  # fmt: skip
  ds.batch(0)
  first_batch_s = time.time() - start
  step = iter(range(1, 1 << 62))
  _serve_windows(
    lambda: ds.batch(next(step)), dict(first_batch_s=first_batch_s, describe=ds.describe())
  )


def serve_dopamine() -> None:
  from dopamine.tf.replay_memory.circular_replay_buffer import OutOfGraphReplayBuffer

  _, dqn_dir, _ = _paths()
  buf = OutOfGraphReplayBuffer(
    (84, 84), 4, _CAPACITY.value, _BATCH_SIZE.value, update_horizon=_N_STEP.value
  )
  start = time.time()
  buf.load(os.path.join(dqn_dir, GAME, "1", "replay_logs"), 0)
  load_s = time.time() - start
  buf.sample_transition_batch()
  first_batch_s = time.time() - start
  _serve_windows(buf.sample_transition_batch, dict(load_s=load_s, first_batch_s=first_batch_s))


# --------------------------------------------------------------------------------------------------
# Driver.


class _Role:
  """A measurement process driven line by line through its stdin/stdout."""

  def __init__(self, role: str):
    argv = [sys.executable, os.path.abspath(__file__), f"--role={role}"]
    argv += [a for a in sys.argv[1:] if not a.startswith("--role")]
    self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

  def read(self) -> dict:
    for line in self.proc.stdout:
      if line.startswith("JSON "):
        return json.loads(line[5:])
      sys.stdout.write(line)
    raise RuntimeError(f"measurement process exited with {self.proc.wait()}")

  def send(self, command: str) -> None:
    self.proc.stdin.write(command + "\n")
    self.proc.stdin.flush()


def measure() -> tuple[dict, dict]:
  """Alternates windows of the two samplers; returns their setup figures, rates and peak RSS."""
  results = {}
  roles = {"ours": _Role("ours"), "dopamine": _Role("dopamine")}
  for name, role in roles.items():
    results[name] = dict(role.read(), rates=[])
  for _ in range(_NUM_WINDOWS.value):
    for name, role in roles.items():
      role.send("GO")
      results[name]["rates"].append(role.read()["rate"])
  for name, role in roles.items():
    role.send("STOP")
    results[name].update(role.read())
    role.proc.wait()
  for r in results.values():
    r["rate"] = float(np.median(r["rates"]))
  return results["ours"], results["dopamine"]


def main(argv):
  del argv
  role = _ROLE.value
  if role in ("ours", "dopamine"):
    serve_ours() if role == "ours" else serve_dopamine()
    return
  if role == "generate":
    generate()
    return
  root, dqn_dir, shard_dir = _paths()
  if not os.path.exists(os.path.join(root, "generated.json")):
    print(
      f"generating {_NUM_CHECKPOINTS.value} x {_CAPACITY.value:,} rows in {root} ...", flush=True
    )
    subprocess.run(
      [sys.executable, os.path.abspath(__file__), "--role=generate"] + sys.argv[1:], check=True
    )
  start = time.time()
  subprocess.run(
    [
      sys.executable,
      "-m",
      "data_prep.convert",
      f"--replay_dir={dqn_dir}",
      f"--shard_dir={shard_dir}",
      f"--games={GAME}",
      "--runs=1",
      "--suffixes=all",
    ],
    check=True,
    cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  )
  print(f"convert (skips already converted suffixes): {time.time() - start:.1f}s")
  ours, dopamine = measure()
  windows = " ".join(f"{o / d:.1f}" for o, d in zip(ours["rates"], dopamine["rates"], strict=True))
  print(f"per-window ratios (ours/dopamine): {windows}")
  rows = _NUM_CHECKPOINTS.value * _CAPACITY.value
  print(
    f"ours      {ours['rate']:>10,.0f} transitions/s over {rows:,} rows; first batch "
    f"{ours['first_batch_s']:.2f}s; peak RSS {ours['peak_rss_gb']:.2f} GB"
  )
  print(f"          {ours['describe']}")
  print(
    f"dopamine  {dopamine['rate']:>10,.0f} transitions/s over {_CAPACITY.value:,} rows; load "
    f"{dopamine['load_s']:.1f}s; first batch {dopamine['first_batch_s']:.1f}s; "
    f"peak RSS {dopamine['peak_rss_gb']:.2f} GB"
  )
  print(
    f"targets: ratio >= 10: {ours['rate'] / dopamine['rate'] >= 10}; "
    f"our peak RSS < 3 GB: {ours['peak_rss_gb'] < 3}; first batch < 10 s: {ours['first_batch_s'] < 10}"
  )
  print(f"RESULT data_throughput_vs_dopamine {ours['rate'] / dopamine['rate']:.2f}")


if __name__ == "__main__":
  app.run(main)
