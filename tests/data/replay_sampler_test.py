"""ReplayDataset: determinism, resumability, per-host sharding, game mixing, bounded memory."""

import os

import numpy as np
import pytest
import replay_fixtures as rf

from data_prep import convert
from scaled_ql.data import ReplayDataset

CAPACITY = 600


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
  """Two games (Breakout from real frames; 'Pong' with other real frames), 2 suffixes each."""
  root = str(tmp_path_factory.mktemp("data"))
  for i, game in enumerate(["Breakout", "Pong"]):
    replay_dir = os.path.join(root, "dqn", game, "1", "replay_logs")
    rf.write_dopamine_run(replay_dir, CAPACITY, [700, 1290], seed=i)
  convert.convert(
    os.path.join(root, "dqn"), os.path.join(root, "shards"), ["Breakout", "Pong"], [1], "all"
  )
  return os.path.join(root, "shards")


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
