r"""Sampling throughput and memory: scaled_ql.data.ReplayDataset vs dopamine's replay buffer.

  .venv/bin/python benchmarks/data_throughput.py            # 3 checkpoints of 1,000,000 rows
  .venv/bin/python benchmarks/data_throughput.py --capacity=100000 --num_windows=3  # quick look

Data: DQN-Replay-format files written by dopamine's own `OutOfGraphReplayBuffer.save` from real
ALE frames (a random policy in Breakout, Pong and MsPacman with the DQN Replay protocol, real
episode ends and clipped rewards, drawing among each game's first 4 actions so that all are
valid in Breakout's files; the recorded transitions are cycled to fill each 1M-row
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

  .venv/bin/python benchmarks/data_throughput.py --paper   # the paper configurations' pool

With --paper, ours samples with the pool settings of --paper_gin (chunk_rows, slots per game,
sample_reuse, num_io_threads) instead of the defaults. Scaled down: the number of games, to
what --paper_pool_gb holds with the paper's per-game share of the pool (2 of 40 by default,
each a copy of the same Breakout data); kept: the batch of 512 (one host's share on a single
TPU host), so each step gathers as many samples and loads as many rows (512 / sample_reuse) as
there. It also prints the start-up fill rate and the locality: how many distinct slots
(chunks) a game's samples in a batch come from, measured over --locality_batches batches and
predicted (`sampler.game_locality`), both at the benchmark's settings and for the paper's
40-game batch (measured on disjoint groups of m ~ Binomial(512, 1/40) of each game's samples
in a batch: what a 40-game batch of 512 holds of a game, drawn from the same per-game pool).
Beside the ratio, its targets compare our rate with the most a v3-8 host could consume.
Its last line is `RESULT data_throughput_paper_vs_dopamine <ratio>`.
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
_PAPER = flags.DEFINE_bool("paper", False, "Ours samples with --paper_gin's pool settings.")
_PAPER_GIN = flags.DEFINE_string("paper_gin", "pretrain_near_optimal.gin", "With --paper.")
_PAPER_NUM_GAMES = flags.DEFINE_integer("paper_num_games", 40, "Games of the paper config.")
_PAPER_POOL_GB = flags.DEFINE_float(
  "paper_pool_gb", 6.0, "With --paper: our pool's budget here; sets the number of games."
)
_LOCALITY_BATCHES = flags.DEFINE_integer("locality_batches", 200, "With --paper: batches counted.")

GAME = "Breakout"
REAL_GAMES = ("Breakout", "Pong", "MsPacman")
# What a single TPU host could consume at most, for --paper: a v3-8 (4 chips x 123 TFLOP/s bf16,
# cloud.google.com/tpu/docs/v3) running the ResNet-101 step at its peak, 335 GFLOP per 32
# examples (XLA's count, benchmarks/train_step.py): 47,000 transitions/s.
V3_8_PEAK_TRANSITIONS_PER_S = 4 * 123e12 / (335e9 / 32)


def _peak_rss_gb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def _paths():
  # v2: actions valid in Breakout (v1 caches hold Pong's and MsPacman's, which convert rejects).
  root = os.path.join(_CACHE_DIR.value, f"cap{_CAPACITY.value}_k{_NUM_CHECKPOINTS.value}_v2")
  return root, os.path.join(root, "dqn"), os.path.join(root, "shards")


# --------------------------------------------------------------------------------------------------
# Roles (each runs in its own process).


def _record_real_transitions(steps_per_game: int = 12_000):
  """Returns real ALE transitions (frame, action, clipped reward, terminal), episodes intact.

  Each game is played with random actions among its first `num_actions(GAME)` ones, so that
  every recorded action is valid in GAME's files (the reader checks them).
  """
  from scaled_ql import atari, games

  frames, actions, rewards, terminals = [], [], [], []
  for i, game in enumerate(REAL_GAMES):
    with atari.VectorEnv(game, num_envs=1, seed=i) as env:
      obs, rng = env.reset(), np.random.default_rng(i)
      for _ in range(steps_per_game):
        action = rng.integers(min(env.num_actions, games.num_actions(GAME)), size=1)
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


def _paper_settings() -> dict:
  """The pool settings of --paper_gin (the ReplayDataset defaults where it sets none)."""
  import inspect

  import gin

  from scaled_ql import configurables
  from scaled_ql.data import ReplayDataset

  configurables.parse_gin([_PAPER_GIN.value], [])
  defaults = inspect.signature(ReplayDataset).parameters
  settings = {}
  for name in ("pool_rows", "chunk_rows", "sample_reuse", "num_io_threads"):
    try:
      settings[name] = gin.query_parameter(f"data.ReplayDataset.{name}")
    except ValueError:
      settings[name] = defaults[name].default
  if settings["chunk_rows"] is None:
    raise ValueError(f"{_PAPER_GIN.value} sets no chunk_rows: nothing to scale per game")
  return settings


def _paper_dataset(shard_dir, paper: dict):
  """Our sampler with the paper's per-game pool, over as many games as --paper_pool_gb holds."""
  from scaled_ql.data import ReplayDataset, sampler

  chunk_rows, batch, num_games = paper["chunk_rows"], _BATCH_SIZE.value, _PAPER_NUM_GAMES.value
  slots_per_game = max(2, paper["pool_rows"] // (chunk_rows * num_games))
  game_bytes = slots_per_game * (chunk_rows + _N_STEP.value) * 84 * 84 * 4
  games = int(np.clip(_PAPER_POOL_GB.value * 1e9 // game_bytes, 1, num_games))
  ds = ReplayDataset(
    shard_dir, [GAME] * games, runs=[1], suffixes="all", n_step=_N_STEP.value, gamma=0.99,
    seed=0, local_batch_size=batch, pool_rows=games * slots_per_game * chunk_rows,
    chunk_rows=chunk_rows, sample_reuse=paper["sample_reuse"],
    num_io_threads=paper["num_io_threads"],
  )  # fmt: skip
  assert ds.slots_per_game == slots_per_game

  def predicted(batch_size: int) -> dict:
    """The paper configuration's figures per game and host, with `batch_size` per host."""
    lifetime = max(2, round(paper["sample_reuse"] * num_games * slots_per_game * chunk_rows
                            / batch_size))  # fmt: skip
    return sampler.game_locality(
      batch_size, 1 / num_games, slots_per_game, chunk_rows, lifetime
    )._asdict()

  setup = dict(
    paper=dict(paper, games=num_games, slots_per_game=slots_per_game,
               pool_gb=num_games * game_bytes / 1e9, one_host=predicted(batch),
               sixteen_hosts=predicted(batch // 16)),
    games=games, pool_gb=games * game_bytes / 1e9, bench=ds.locality()[0]._asdict(),
  )  # fmt: skip
  return ds, setup


def _measure_locality(ds, first_step: int, num_batches: int, paper_games: int) -> dict:
  """Distinct slots (chunks) per game per batch over `num_batches` batches from `first_step`.

  Returns means over batches and games: `whole`, of all of a game's samples in a batch (the
  benchmark's batch); `paper`, of groups of m ~ Binomial(B, 1/paper_games) of them (what a
  batch of the paper's games holds of a game), disjoint groups of the game's samples in the
  batch (each sample is an independent draw of a slot given the pool). Slots stand for chunks:
  about slots^2 / (2 x the game's chunks) pairs of slots hold the same chunk: 3.4 pairs of the
  200 slots with the 5,859 chunks of 3M rows.
  """
  draws, draw = [], ds._draw  # the draw of each batch: (game_id, pool buffer, index)
  ds._draw = lambda step: draws.append(draw(step)) or draws[-1]
  try:
    for step in range(first_step, first_step + num_batches):
      ds.batch(step)
  finally:
    del ds._draw
  rng, num_games = np.random.default_rng(0), len(ds.game_names)
  groups = max(1, paper_games // (2 * num_games))  # half of a game's samples on average
  whole, paper = [], []
  for game_id, buffer, _ in draws:  # a slot's buffer is the slot for the batch
    for g in range(num_games):
      buffers = buffer[game_id == g]
      whole.append(len(set(buffers)))
      sizes = rng.binomial(len(game_id), 1 / paper_games, size=groups)
      if sizes.sum() <= len(buffers):  # all but ~never (a skip would bias the sizes)
        ends = np.cumsum(sizes)
        paper += [len(set(buffers[end - m : end])) for m, end in zip(sizes, ends, strict=True)]
  return dict(whole=float(np.mean(whole)), paper=float(np.mean(paper)), paper_groups=len(paper))


def serve_ours() -> None:
  from scaled_ql.data import ReplayDataset

  _, _, shard_dir = _paths()
  paper = _paper_settings() if _PAPER.value else None  # imports JAX: before the clock starts
  start = time.time()
  if _PAPER.value:
    ds, setup = _paper_dataset(shard_dir, paper)
  else:
    ds, setup = ReplayDataset(
      shard_dir, [GAME], runs=[1], suffixes="all", n_step=_N_STEP.value, gamma=0.99, seed=0,
      local_batch_size=_BATCH_SIZE.value,
    ), {}  # fmt: skip
  ds.batch(0)
  setup.update(first_batch_s=time.time() - start, describe=ds.describe())
  setup["pool_rows"] = ds._pool.num_slots * ds.chunk_rows
  first_step = 1
  if _PAPER.value:
    setup["measured"] = _measure_locality(
      ds, first_step, _LOCALITY_BATCHES.value, _PAPER_NUM_GAMES.value
    )
    first_step += _LOCALITY_BATCHES.value
  step = iter(range(first_step, 1 << 62))
  _serve_windows(lambda: ds.batch(next(step)), setup)


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
  ratio = ours["rate"] / dopamine["rate"]
  if _PAPER.value:
    _print_paper(ours)
    feed = ours["rate"] / V3_8_PEAK_TRANSITIONS_PER_S
    print(
      f"targets: ratio >= 10: {ratio >= 10}; ours >= a v3-8's peak consumption "
      f"({V3_8_PEAK_TRANSITIONS_PER_S:,.0f}/s, ResNet-101): {feed >= 1} ({feed:.2f}x); our peak "
      f"RSS < pool + 1.5 GB: {ours['peak_rss_gb'] < ours['pool_gb'] + 1.5}"
    )
    print(f"RESULT data_throughput_paper_vs_dopamine {ratio:.2f}")
    return
  print(
    f"targets: ratio >= 10: {ratio >= 10}; our peak RSS < 3 GB: {ours['peak_rss_gb'] < 3}; "
    f"first batch < 10 s: {ours['first_batch_s'] < 10}"
  )
  print(f"RESULT data_throughput_vs_dopamine {ratio:.2f}")


def _print_paper(ours: dict) -> None:
  """The paper-configuration figures: what was scaled down, fill rate, locality."""
  paper, bench, measured = ours["paper"], ours["bench"], ours["measured"]
  one, pod = paper["one_host"], paper["sixteen_hosts"]
  print(
    f"paper settings ({_PAPER_GIN.value}): pool_rows {paper['pool_rows']:,}, chunk_rows "
    f"{paper['chunk_rows']}, sample_reuse {paper['sample_reuse']}, num_io_threads "
    f"{paper['num_io_threads']}: {paper['slots_per_game']} slots per game of "
    f"{paper['games']}, a {paper['pool_gb']:.1f} GB pool per host"
  )
  print(
    f"scaled down: {ours['games']} of {paper['games']} games (copies of the Breakout data), a "
    f"{ours['pool_gb']:.1f} GB pool; kept: per-game pool, batch {_BATCH_SIZE.value}, "
    f"{_BATCH_SIZE.value / paper['sample_reuse']:.0f} rows loaded per step; a slot lives "
    f"{bench['slot_lifetime_steps']:,} steps here, {one['slot_lifetime_steps']:,} with "
    f"{paper['games']} games"
  )
  fill_rate = ours["pool_rows"] / ours["first_batch_s"]
  print(
    f"start-up: {ours['pool_rows']:,} rows loaded and stacked before the first batch in "
    f"{ours['first_batch_s']:.1f} s ({fill_rate:,.0f} rows/s); the paper host's "
    f"{paper['pool_rows']:,} rows at this rate: {paper['pool_rows'] / fill_rate:.0f} s"
  )
  print(
    f"locality, one host of the paper configuration (batch {_BATCH_SIZE.value}, "
    f"{paper['games']} games): a batch's ~{one['samples_per_batch']:.1f} samples of a game come "
    f"from {measured['paper']:.2f} distinct slots (measured: {measured['paper_groups']:,} such "
    f"groups in {_LOCALITY_BATCHES.value} batches), {one['distinct_chunks_per_batch']:.2f} "
    f"predicted; each loaded row is sampled ~{one['reuse_per_row']:.2g}x"
  )
  print(
    f"          at this benchmark's own settings ({ours['games']} games): "
    f"~{bench['samples_per_batch']:.0f} samples per game from {measured['whole']:.1f} distinct "
    f"slots measured, {bench['distinct_chunks_per_batch']:.1f} predicted"
  )
  print(
    f"          16 hosts (batch {_BATCH_SIZE.value // 16} per host): "
    f"{pod['distinct_chunks_per_batch']:.2f} per host, "
    f"{16 * pod['distinct_chunks_per_batch']:.1f} in the global batch (predicted); a slot "
    f"lives {pod['slot_lifetime_steps']:,} steps"
  )


if __name__ == "__main__":
  app.run(main)
