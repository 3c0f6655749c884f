"""ReplayDataset: determinism, resumability, per-host sharding, game mixing, bounded memory."""

import os
import threading

import numpy as np
import pytest
import replay_fixtures as rf

from data_prep import convert
from scaled_ql.data import ReplayDataset, sampler

CAPACITY = 600


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
  """Two games (Breakout from real frames; 'Pong' with other real frames), 2 suffixes each."""
  return rf.two_game_shards(str(tmp_path_factory.mktemp("data")), CAPACITY)


def _dataset(shard_dir, games=("Breakout", "Pong"), **kwargs):
  args = dict(
    runs=[1], n_step=3, gamma=0.99, seed=0, local_batch_size=64, chunk_rows=64, pool_rows=512
  )
  args.update(kwargs)
  return ReplayDataset(shard_dir, list(games), **args)


def _assert_batches_equal(a, b):
  for x, y in zip(a, b, strict=True):
    np.testing.assert_array_equal(x, y)


def test_batch_contract(shard_dir):
  batch = _dataset(shard_dir).batch(0)
  assert batch.obs.shape == batch.next_obs.shape == (64, 84, 84, 4)
  assert batch.obs.dtype == batch.next_obs.dtype == np.uint8
  assert batch.action.dtype == batch.game_id.dtype == np.int32
  assert batch.reward.dtype == batch.discount.dtype == np.float32
  assert set(np.unique(batch.discount)) <= {np.float32(0.0), np.float32(0.99**3)}
  assert np.all(np.abs(batch.reward) <= 1 + 0.99 + 0.99**2)


def test_batch_is_a_pure_function_of_seed_step_and_process(shard_dir):
  ds = _dataset(shard_dir)
  later = [ds.batch(s) for s in range(40)]  # slots turn over many times in 40 steps
  fresh = _dataset(shard_dir)
  _assert_batches_equal(fresh.batch(37), later[37])  # resume = continue from the step
  _assert_batches_equal(fresh.batch(3), later[3])  # and backwards
  # Jumps (a resume at another step) discard chunks prefetched for the old position.
  jumping = _dataset(shard_dir)
  for step in [0, 1, 2, 500, 2, 37]:
    _assert_batches_equal(jumping.batch(step), later[step] if step < 40 else fresh.batch(step))
  other_seed = _dataset(shard_dir, seed=1).batch(3)
  assert not np.array_equal(other_seed.obs, later[3].obs)


def test_iterate_resumes_the_same_sequence(shard_dir):
  ds = _dataset(shard_dir)
  expected = [ds.batch(s) for s in range(5, 9)]
  iterator = _dataset(shard_dir).iterate(start_step=5, prefetch=2)
  for want in expected:
    _assert_batches_equal(next(iterator), want)
  iterator.close()


def test_iterate_surfaces_errors(shard_dir):
  ds = _dataset(shard_dir)
  ds.batch = lambda step: (_ for _ in ()).throw(RuntimeError(f"boom at {step}"))
  with pytest.raises(RuntimeError, match="boom at 0"):
    next(ds.iterate(0))


def test_per_host_sharding_is_disjoint_and_complete(shard_dir):
  hosts = [_dataset(shard_dir, process_index=i, process_count=2) for i in range(2)]
  chunks = [set(h._chunks[0]) for h in hosts]
  assert not chunks[0] & chunks[1]
  everything = _dataset(shard_dir)._chunks[0]
  assert chunks[0] | chunks[1] == set(everything)
  assert not np.array_equal(hosts[0].batch(0).obs, hosts[1].batch(0).obs)


def test_game_mixing_and_game_id(shard_dir):
  equal = np.concatenate([_dataset(shard_dir).batch(s).game_id for s in range(10)])
  assert abs(np.mean(equal == 1) - 0.5) < 0.1
  weighted = np.concatenate(
    [_dataset(shard_dir, game_weights=[3, 1]).batch(s).game_id for s in range(10)]
  )
  assert abs(np.mean(weighted == 0) - 0.75) < 0.1
  # game_id is the index in the given list: Pong first makes Pong's id 0.
  ds = _dataset(shard_dir, games=("Pong", "Breakout"), game_weights=[1, 0])
  batch = ds.batch(0)
  only_pong = _dataset(shard_dir, games=("Pong",))
  assert (batch.game_id == 0).all()
  reference = only_pong.transitions_at(0, 0, only_pong.valid_rows(0, 0))
  pong_states = {o.tobytes() for o in reference.obs}
  assert all(o.tobytes() in pong_states for o in batch.obs)


def test_memory_is_bounded_by_the_pool(shard_dir):
  small = _dataset(shard_dir, pool_rows=256, chunk_rows=64)
  large_data = _dataset(shard_dir, pool_rows=256, chunk_rows=64, suffixes="0")
  assert small.pool_bytes == large_data.pool_bytes  # independent of the amount of data
  slot_bytes = (64 + 3) * 84 * 84 * 4  # (rows + n) 4-frame stacks
  assert (
    2 * 2 * slot_bytes <= small.pool_bytes <= 2 * (2 * 2 * slot_bytes)
  )  # games x slots (+ spares)


def test_row_fraction_spreads_over_suffixes(shard_dir):
  full = _dataset(shard_dir)._segments[0][0].parts
  ds = _dataset(shard_dir, row_fraction=0.1)
  segments = ds._segments[0]
  assert len(segments) == 2  # one piece per suffix, not stitched
  assert [s.num_rows for s in segments] == [int(np.ceil(0.1 * p.num_rows)) for p in full]
  ds.batch(0)


CHUNK_ROWS = 64


@pytest.fixture(scope="module")
def mixed_validity_shard_dir(tmp_path_factory):
  """One Breakout suffix of 1024 rows whose 64-row chunks alternate between two kinds.

  A "long" chunk is 3 padding rows and one 61-step episode (61 valid states, action 0); a
  "short" chunk is 16 one-step episodes of 3 padding rows each (16 valid states, action 1).
  """
  root = str(tmp_path_factory.mktemp("mixed"))
  buf = rf.make_dopamine_buffer(capacity=2048)
  frames = rf.real_frames()
  t = 0
  for _ in range(8):
    for i in range(61):
      buf.add(frames[t], 0, 0.0, i == 60)
      t += 1
    for _ in range(16):
      buf.add(frames[t], 1, 0.0, True)
      t += 1
  assert buf.add_count == 8 * 2 * CHUNK_ROWS  # dopamine added 3 padding rows per episode
  replay_dir = os.path.join(root, "dqn", "Breakout", "1", "replay_logs")
  os.makedirs(replay_dir)
  buf.save(replay_dir, 0)
  shard_dir = os.path.join(root, "shards")
  convert.convert(os.path.join(root, "dqn"), shard_dir, ["Breakout"], [1], "all")
  return shard_dir


def test_every_valid_state_is_equally_likely(mixed_validity_shard_dir):
  """A chunk with many invalid rows is not over-sampled: its states are as likely as others.

  Chunks enter the pool in proportion to their rows; all chunks here have 64 rows, so every
  valid state held in the pool must be equally likely (counted once per slot holding it). That
  gives the exact share of short-chunk states (action 1) given the pool at each step; drawing
  slots uniformly would make it the share of slots holding short chunks (0.31 here, not 0.11).
  """
  ds = _dataset(
    mixed_validity_shard_dir,
    games=("Breakout",),
    local_batch_size=256,
    chunk_rows=CHUNK_ROWS,
    pool_rows=16 * CHUNK_ROWS,
    sample_reuse=1000.0,  # few chunk loads in 40 steps: a fast test
  )
  pool = ds._pool
  observed, expected, variance = 0, 0.0, 0.0
  for step in range(40):
    batch = ds.batch(step)
    buffers = pool.buffer_of_slot
    num_valid = pool.num_valid[buffers]  # [S]
    num_short = [
      np.sum(pool.action[b, :v] == 1) for b, v in zip(buffers, num_valid, strict=True)
    ]  # [S]
    p = np.sum(num_short) / np.sum(num_valid)
    assert 0.05 < p < 0.5  # the pool holds chunks of both kinds
    observed += np.sum(batch.action == 1)
    expected += len(batch.action) * p
    variance += len(batch.action) * p * (1 - p)
  # 10,240 samples: a binomial standard deviation of 31; uniform slots are off by 68 of them.
  assert abs(observed - expected) < 4 * np.sqrt(variance), (observed, expected, variance)


def _record_chunks(ds, monkeypatch):
  """Wraps the pool's loads and the batch draw to see where each sample comes from.

  Returns:
    held: {pool buffer: (segment id, first row)} of the chunk each buffer was last filled with
      (what was read, not what the pool's rng should have drawn).
    draws: the (game_id, buffer, k) of every batch drawn since, in order.
  """
  from scaled_ql.data import pool as pool_module

  held, draws, last = {}, [], threading.local()
  read_chunk, load, draw = pool_module.read_chunk, ds._pool._load, ds._draw

  def recording_read_chunk(reader, segment, lo, hi, *args):
    last.chunk = (id(segment), lo)
    return read_chunk(reader, segment, lo, hi, *args)

  def recording_load(buffer, slot, generation):
    load(buffer, slot, generation)
    held[int(buffer)] = last.chunk  # the chunk kept is the last one read

  def recording_draw(step):
    draws.append(draw(step))
    return draws[-1]

  monkeypatch.setattr(pool_module, "read_chunk", recording_read_chunk)
  monkeypatch.setattr(ds._pool, "_load", recording_load)
  monkeypatch.setattr(ds, "_draw", recording_draw)
  return held, draws


def test_distinct_chunks_per_batch_match_the_prediction(shard_dir, monkeypatch):
  """Counts the distinct chunks each game's samples of a batch come from, over 200 batches.

  32 slots of 8 rows per game, 16 samples per game per batch: about 12.7 of 32 slots are hit
  (a regime where the count is far from both the samples and the slots). The measurement
  must equal, batch by batch in expectation, `expected_distinct` of that pool's actual chunk
  probabilities (slots weighed by valid fraction, slots holding the same chunk merged), and
  stay just under `describe`'s a-priori figure, which assumes equal and distinct slots.
  """
  ds = _dataset(shard_dir, local_batch_size=32, chunk_rows=8, pool_rows=2 * 32 * 8)
  assert ds.slots_per_game == 32
  held, draws = _record_chunks(ds, monkeypatch)
  pool, num_slots = ds._pool, ds.slots_per_game
  measured, exact = [], []  # per (batch, game)
  for step in range(200):
    ds.batch(step)
    game_id, buffer, _ = draws[-1]
    for g in range(2):
      measured.append(len({held[int(b)] for b in buffer[game_id == g]}))
      buffers = pool.buffer_of_slot[g * num_slots + np.arange(num_slots)]
      q = pool.valid_fraction[buffers] / pool.valid_fraction[buffers].sum()  # [S] slot choice
      chunks = [held[int(b)] for b in buffers]
      p = {c: 0.0 for c in chunks}
      for c, q_s in zip(chunks, q, strict=True):
        p[c] += ds.game_weights[g] * q_s  # one example's probability of hitting chunk c
      exact.append(sampler.expected_distinct(ds.local_batch_size, np.array(list(p.values()))))
  measured, exact = np.array(measured, float), np.array(exact)
  diff = measured - exact
  standard_error = diff.std() / np.sqrt(len(diff))
  assert abs(diff.mean()) < 4 * standard_error, (measured.mean(), exact.mean(), standard_error)
  a_priori = ds.locality()[0].distinct_chunks_per_batch
  assert a_priori == pytest.approx(32 * (1 - (1 - 0.5 / 32) ** 32))
  assert a_priori == ds.locality()[1].distinct_chunks_per_batch
  assert 0.9 * a_priori < measured.mean() < a_priori, (measured.mean(), a_priori)
  assert f"~{a_priori:.1f} distinct chunks" in ds.describe()


def test_locality_figures():
  # The paper configurations on one host: 40 games, 200 slots of 512 rows each, reuse 1.
  paper = sampler.game_locality(512, 1 / 40, 200, 512, slot_lifetime_steps=8000)
  assert paper.rows_in_memory == 102_400 and paper.samples_per_batch == pytest.approx(12.8)
  assert paper.distinct_chunks_per_batch == pytest.approx(200 * (1 - np.exp(-0.064)), rel=1e-3)
  assert paper.reuse_per_row == pytest.approx(1.0)
  # More slots than samples: nearly one chunk per sample; fewer: at most one per slot.
  assert 12.7 < sampler.game_locality(512, 1 / 40, 100_000, 512, 10).distinct_chunks_per_batch
  assert sampler.game_locality(512, 1 / 40, 2, 512, 10).distinct_chunks_per_batch < 2


@pytest.mark.parametrize("gin_file", ["pretrain_near_optimal.gin", "pretrain_low_quality.gin"])
def test_paper_configurations_sample_from_many_chunks(gin_file):
  """The paper configurations' pool (40 games, batch 512 on one host) is what their comment
  says: ~116 GB, 200 slots of 512 rows per game, ~12.4 distinct chunks per game and batch."""
  import gin

  from scaled_ql import configurables

  configurables.parse_gin([gin_file], [])
  try:
    pool_rows, chunk_rows, reuse, games, batch = (
      gin.query_parameter(name)
      for name in (
        "data.ReplayDataset.pool_rows", "data.ReplayDataset.chunk_rows",
        "data.ReplayDataset.sample_reuse", "train.game_names", "train.global_batch_size",
      )
    )  # fmt: skip
  finally:
    gin.clear_config()
  num_games = len(games.scoped_configurable_fn())  # %TRAIN_GAMES
  slots = pool_rows // (chunk_rows * num_games)  # as the sampler computes them
  lifetime = round(reuse * num_games * slots * chunk_rows / batch)
  paper = sampler.game_locality(batch, 1 / num_games, slots, chunk_rows, lifetime)
  assert num_games == 40 and batch == 512
  assert num_games * slots * (chunk_rows + 3) * 84 * 84 * 4 / 1e9 == pytest.approx(116.3, abs=0.1)
  assert paper.slots == 200 and paper.chunk_rows == 512 and paper.slot_lifetime_steps == 8000
  assert paper.distinct_chunks_per_batch == pytest.approx(12.40, abs=0.01)
  assert paper.reuse_per_row == pytest.approx(1.0)
