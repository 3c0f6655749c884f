"""Run directories and raw data through etils.epath: local paths (str or epath.Path) and gs://.

There is no GCS here: `bucket` points epath's `gs://` at its own fsspec backend over an
in-memory filesystem with a bucket's limits (objects cannot be appended to or renamed), so the
code's non-local branches run for real, through the same API; GCS itself is not exercised.
"""

import json
import os

import numpy as np
import orbax.checkpoint._src.path.gcs_utils as orbax_gcs_utils
import pytest
from etils import epath
from etils.epath import backend, gpath
from fsspec.implementations.memory import MemoryFileSystem
from tensorboard.backend.event_processing import event_accumulator

from data_prep import convert
from scaled_ql import checkpointing, games, initialization, metrics, runs, video
from scaled_ql.actor import Step
from scaled_ql.data import dqn_replay, shards
from scaled_ql.report import build


class _FakeBucket(backend._FileSystemSpecBackend):
  """epath's fsspec backend over memory, refusing what a bucket cannot do atomically."""

  def __init__(self):
    self.memory = MemoryFileSystem(skip_instance_cache=True)
    self.memory.store, self.memory.pseudo_dirs = {}, [""]
    self.read_only = False

  def fs(self, path):
    return self.memory

  def open(self, path, mode):
    if "a" in mode:
      raise OSError(f"{path}: objects in a bucket cannot be appended to")
    if self.read_only and "r" not in mode:
      raise PermissionError(f"403 Forbidden: no write access to {path}")
    return super().open(path, mode)

  def rename(self, path, dst):
    raise OSError(f"{path}: a bucket's rename is a copy, not atomic")

  replace = rename

  def glob(self, path):
    return self.memory.glob(os.fspath(path))  # Memory keeps the gs:// prefix (gcsfs drops it).

  def objects(self) -> list[str]:
    return sorted(self.memory.store)


@pytest.fixture
def bucket(monkeypatch):
  fake = _FakeBucket()
  monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, "gs", fake)
  monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)  # Else gs:// goes to tf.io.gfile.
  return fake


def _results(returns: dict[str, list[float]]) -> runs.EvalResults:
  per_game = {
    game: runs.GameResult(k, games.num_actions(game), r, [10] * len(r), [False] * len(r))
    for k, (game, r) in enumerate(sorted(returns.items()))
  }
  return runs.EvalResults(per_game, {}, "dqn", 0.001, 0, 0, 1, 40, 1.0)


def _write_and_read_run(workdir) -> None:
  """A run as the trainer and evaluation write it, read back through `runs`."""
  runs.check_writable(workdir)
  info = dict(method="scaled_ql", game_names=["Pong"], seed=3, phase="pretrain")
  runs.write_run_info(workdir, info, "# operative\n")
  assert runs.is_run(workdir) and runs.read_run_info(workdir) == info
  runs.check_same_run(workdir, info, ["game_names", "seed"])
  with pytest.raises(ValueError, match="seed: 3 -> 4"):
    runs.check_same_run(workdir, dict(info, seed=4), ["game_names", "seed"])
  path = runs.write_results(workdir, _results({"Pong": [1.0, 3.0]}), checkpoint_step=7)
  runs.write_results(workdir, _results({"Breakout": [5.0]}), checkpoint_step=7)  # Merged.
  assert isinstance(path, str) and runs.find_results(workdir) == [path]
  (results,) = runs.read_all_results(workdir)
  assert results.mean_returns() == {"Pong": 2.0, "Breakout": 5.0}
  assert results.checkpoint_step == 7
  episodes = (epath.Path(path).parent / "episodes.csv").read_text().splitlines()
  assert episodes[0] == "game,game_id,episode,return,length,truncated" and len(episodes) == 4


@pytest.mark.parametrize("as_path", [str, epath.Path])
def test_a_local_run_is_written_and_read_back_through_the_path_api(tmp_path, as_path):
  workdir = as_path(tmp_path / "run")
  _write_and_read_run(workdir)
  assert not [p for p in os.listdir(tmp_path / "run") if p.endswith(".tmp")]


def test_a_run_in_a_bucket_is_written_and_read_back(bucket):
  _write_and_read_run("gs://bucket/run")
  assert "gs://bucket/run/run_info.json" in bucket.objects()
  assert not [p for p in bucket.objects() if "write_probe" in p or p.endswith(".tmp")]


def test_an_unwritable_bucket_is_refused_naming_it(bucket):
  bucket.read_only = True
  with pytest.raises(PermissionError, match=r"gs://bucket/run is not writable \(403 Forbidden"):
    runs.check_writable("gs://bucket/run")


@pytest.mark.parametrize("where", ["local", "bucket"])
def test_write_atomically_keeps_the_old_file_when_a_write_fails(tmp_path, request, where):
  path = str(tmp_path / "f.json") if where == "local" else "gs://bucket/f.json"
  if where == "bucket":
    request.getfixturevalue("bucket")
  runs.write_atomically(path, "old")
  with pytest.raises(UnicodeEncodeError):  # Fails part way through the text: nothing written.
    runs.write_atomically(path, "new" * 1000 + "\ud800")
  assert epath.Path(path).read_text() == "old"
  runs.write_atomically(path, "new")
  assert epath.Path(path).read_text() == "new"
  assert not epath.Path(path + ".tmp").exists()


class _Killed(BaseException):
  pass


def test_a_local_write_is_complete_before_it_replaces_the_file(tmp_path, monkeypatch):
  path = str(tmp_path / "f.json")
  runs.write_atomically(path, "old")

  def killed(self, target):  # The process dies between writing and renaming.
    raise _Killed

  monkeypatch.setattr(type(epath.Path(path)), "replace", killed)
  with pytest.raises(_Killed):
    runs.write_atomically(path, "new" * 1000)
  assert open(path).read() == "old" and open(path + ".tmp").read() == "new" * 1000


def _log(workdir, steps, start_step=0, scale=1.0):
  writer = metrics.MetricWriter(workdir, start_step)
  for step in steps:
    writer.write(step, {"loss": scale * step})
    writer.flush()  # As the trainer does after each log row.
  return writer


@pytest.mark.parametrize("where", ["local_str", "local_path", "bucket"])
def test_metrics_read_back_in_order_across_flushes_and_a_resume(
  tmp_path, request, monkeypatch, where
):
  monkeypatch.setattr(metrics, "ROWS_PER_CHUNK", 2)
  workdir = {"local_str": str(tmp_path), "local_path": epath.Path(tmp_path)}.get(where)
  if where == "bucket":
    bucket, workdir = request.getfixturevalue("bucket"), "gs://bucket/run"
  writer = _log(workdir, [1, 2, 3, 4, 5])
  # Flushed rows are readable while the run goes on.
  assert [row["step"] for row in runs.read_metrics(workdir)] == [1, 2, 3, 4, 5]
  writer.close()
  # Resumed from the checkpoint at step 3: rows 4 and 5 are recomputed.
  _log(workdir, [4, 5, 6], start_step=3, scale=10.0).close()
  rows = runs.read_metrics(workdir)
  assert [(r["step"], r["loss"]) for r in rows] == [(1, 1), (2, 2), (3, 3), (4, 40), (5, 50),
                                                    (6, 60)]  # fmt: skip
  assert runs.steps_with(workdir, "loss") == {1, 2, 3, 4, 5, 6}
  if where == "bucket":  # Chunks of at most 2 rows, in order; no metrics.jsonl.
    chunks = [os.path.basename(p) for p in bucket.objects() if "/metrics/" in p]
    assert chunks == ["000000.jsonl", "000001.jsonl", "000002.jsonl", "000003.jsonl"]
    assert "gs://bucket/run/metrics.jsonl" not in bucket.objects()
  else:
    assert [os.fspath(p) for p in runs.metrics_files(workdir)] == [
      os.path.join(tmp_path, "metrics.jsonl")
    ]


def test_a_local_run_moved_from_a_bucket_keeps_logging_in_chunks(tmp_path):
  runs.metrics_chunk(tmp_path, 0).parent.mkdir()
  runs.write_atomically(runs.metrics_chunk(tmp_path, 0), json.dumps({"step": 1}) + "\n")
  _log(str(tmp_path), [2], start_step=1).close()
  assert [r["step"] for r in runs.read_metrics(str(tmp_path))] == [1, 2]
  assert not (tmp_path / "metrics.jsonl").exists() and (tmp_path / "metrics/000001.jsonl").exists()


def test_tensorboard_events_are_written_to_a_bucket_in_bounded_files(bucket, tmp_path, monkeypatch):
  monkeypatch.setattr(metrics, "ROWS_PER_CHUNK", 2)
  _log("gs://bucket/run", [1, 2, 3, 4, 5]).close()
  event_files = sorted(p for p in bucket.objects() if "/tensorboard/events.out.tfevents" in p)
  assert len(event_files) == 3  # A new file with each chunk of 2 rows: no upload keeps growing.
  for i, event_file in enumerate(event_files):
    (tmp_path / f"events.out.tfevents.{i}").write_bytes(bucket.memory.cat_file(event_file))
  accumulator = event_accumulator.EventAccumulator(str(tmp_path))
  accumulator.Reload()
  assert [(e.step, e.value) for e in accumulator.Scalars("loss")] == [
    (step, float(step)) for step in range(1, 6)
  ]


def test_checkpoint_and_init_from_paths_keep_uris(bucket, monkeypatch):
  assert checkpointing.checkpoint_dir("gs://bucket/run") == "gs://bucket/run/checkpoints"
  assert checkpointing.checkpoint_dir("run") == os.path.join(os.getcwd(), "run", "checkpoints")
  assert initialization.InitFrom("gs://b/x/checkpoints/5/").run_and_step() == ("gs://b/x", 5)
  assert initialization.InitFrom("gs://b/x//y/").run_and_step() == ("gs://b/x/y", None)
  assert initialization.InitFrom("a/./b/checkpoints/3").run_and_step() == ("a/b", 3)
  # In a bucket orbax writes a step in place and marks it finished with a commit file last.
  assert not checkpointing.has_checkpoint("gs://bucket/run")
  epath.Path("gs://bucket/run/checkpoints/6/default/x").write_text("")  # Unfinished.
  assert not checkpointing.has_checkpoint("gs://bucket/run")
  epath.Path("gs://bucket/run/checkpoints/5/commit_success.txt").write_text("")
  assert checkpointing.has_checkpoint("gs://bucket/run")
  # orbax asks GCS (google-cloud-storage) whether the bucket has a hierarchical namespace.
  monkeypatch.setattr(orbax_gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
  assert checkpointing.Checkpointer("gs://bucket/run").all_steps() == [5]


def test_report_reads_runs_in_a_bucket(bucket):
  for seed in (0, 1):
    workdir = f"gs://bucket/runs/seed{seed}"
    info = dict(method="scaled_ql", phase="pretrain", seed=seed, game_names=["Pong"],
                data_quality="near_optimal", num_params=10)  # fmt: skip
    runs.write_run_info(workdir, info, "")
    runs.write_results(workdir, _results({"Pong": [float(seed)]}), checkpoint_step=1)
  loaded, left_out = build.load_runs(["gs://bucket/runs", "gs://bucket/missing"], "dqn")
  assert [r.workdir for r in loaded] == ["gs://bucket/runs/seed0", "gs://bucket/runs/seed1"]
  assert left_out == ["run gs://bucket/missing: directory does not exist"]
  with pytest.raises(ValueError, match="written to a local directory"):
    build.build_report(["gs://bucket/runs"], "gs://bucket/report")


def test_a_video_for_a_bucket_is_written_locally_then_copied(bucket):
  recorder = video.EpisodeRecorder("gs://bucket/run/videos", {0: "Pong_v0"})
  obs = np.zeros((1, 84, 84, 4), np.uint8)
  for t in range(3):
    ended = np.array([t == 2])
    flags = dict(terminated=ended, truncated=np.array([False]), stepped=np.array([True]))
    recorder.add(Step(obs + 60 * t, np.zeros(1, np.int32), np.zeros(1, np.float32), **flags,
                      episode_return=np.zeros(1), episode_length=np.full(1, t + 1)))  # fmt: skip
  assert recorder.written == ["gs://bucket/run/videos/Pong_v0.mp4"]
  assert bucket.memory.cat_file(recorder.written[0])[4:8] == b"ftyp"  # An MP4.


# ---------------------------------------------------------------------------------------------
# The raw DQN Replay files, streamed from a bucket into local shards.
# ---------------------------------------------------------------------------------------------

CAPACITY, EPISODE = 40, 20  # 3 padding rows, then 17 rows of which the last is terminal.


def _write_replay_run(replay_dir: str) -> None:
  """Suffixes 0 (40 rows) and 1 (60 rows added: it wrapped) of a Pong run, dopamine's format."""
  rng = np.random.default_rng(0)
  num_rows = 60
  in_episode = np.arange(num_rows) % EPISODE >= 3
  obs = rng.integers(0, 256, (num_rows, 84, 84), np.uint8)
  action = np.where(in_episode, rng.integers(0, 6, num_rows), 0).astype(np.int32)
  reward = np.where(in_episode, rng.choice([-1.0, 0.0, 1.0], num_rows), 0).astype(np.float32)
  terminal = (np.arange(num_rows) % EPISODE == EPISODE - 1).astype(np.uint8)
  os.makedirs(replay_dir)
  for suffix, add_count in ((0, 40), (1, 60)):
    rows = np.arange(add_count - CAPACITY, add_count)
    slot = rows % CAPACITY  # The circular buffer as dopamine saves it.
    for name, array in (("observation", obs), ("action", action), ("reward", reward),
                        ("terminal", terminal)):  # fmt: skip
      buffer = np.zeros((CAPACITY,) + array.shape[1:], array.dtype)
      buffer[slot] = array[rows]
      path = dqn_replay.filename(replay_dir, dqn_replay.STORE_PREFIX + name, suffix)
      dqn_replay.write_npy_gz(path, buffer)
    dqn_replay.write_npy_gz(
      dqn_replay.filename(replay_dir, "invalid_range", suffix), np.zeros(4, np.float64)
    )
    dqn_replay.write_npy_gz(
      dqn_replay.filename(replay_dir, "add_count", suffix), np.array(add_count, np.int64)
    )


def _shard_files(shard_dir: str) -> dict[str, bytes]:
  out = {}
  for root, _, files in os.walk(shard_dir):
    for name in files:
      if name != "meta.json":
        out[os.path.relpath(os.path.join(root, name), shard_dir)] = open(
          os.path.join(root, name), "rb"
        ).read()
  return out


def test_convert_streams_from_a_bucket_into_the_same_local_shards(bucket, tmp_path):
  local_root = tmp_path / "dqn"
  replay_dir = dqn_replay.replay_dir(str(local_root), "Pong", 1)
  _write_replay_run(replay_dir)
  for name in os.listdir(replay_dir):  # The bucket's copy of the same files.
    data = open(os.path.join(replay_dir, name), "rb").read()
    epath.Path(f"gs://atari/dqn/Pong/1/replay_logs/{name}").write_bytes(data)

  from_disk, from_bucket = str(tmp_path / "disk"), str(tmp_path / "bucket")
  counts = convert.convert(epath.Path(local_root), from_disk, ["Pong"], [1], "all")
  assert counts == {"converted": 2, "skipped_done": 0, "skipped_bad": 0}
  counts = convert.convert("gs://atari/dqn", from_bucket, ["Pong"], [1], "all")
  assert counts == {"converted": 2, "skipped_done": 0, "skipped_bad": 0}
  assert _shard_files(from_bucket) == _shard_files(from_disk) and _shard_files(from_disk)
  meta = shards.read_meta(shards.suffix_dir(from_bucket, "Pong", 1, 1))
  assert meta["source"] == "gs://atari/dqn/Pong/1/replay_logs" and meta["num_rows"] == 20
  # The stamps agree: shards converted from a download are not redone from the bucket.
  counts = convert.convert("gs://atari/dqn", from_disk, ["Pong"], [1], "all")
  assert counts == {"converted": 0, "skipped_done": 2, "skipped_bad": 0}


def test_bad_data_in_a_bucket_is_named_as_on_disk(bucket, tmp_path):
  root, shard_dir = "gs://atari/dqn", str(tmp_path / "shards")
  replay_dir = dqn_replay.replay_dir(root, "Pong", 1)
  for name in dqn_replay.REQUIRED_FILES[:-1]:
    epath.Path(dqn_replay.filename(replay_dir, name, 0)).write_bytes(b"not gzip")
  assert dqn_replay.list_suffixes(replay_dir) == [0]
  with pytest.raises(dqn_replay.DataError, match=r"invalid_range_ckpt\.0\.gz: file missing"):
    convert.convert(root, shard_dir, ["Pong"], [1], "all")
  epath.Path(dqn_replay.filename(replay_dir, "invalid_range", 0)).write_bytes(b"")
  with pytest.raises(dqn_replay.DataError, match=r"observation_ckpt\.0\.gz: not a gzip-wrapped"):
    convert.convert(root, shard_dir, ["Pong"], [1], "all")
  with pytest.raises(ValueError, match="shards are written to a local"):
    convert.convert(root, "gs://atari/shards", ["Pong"], [1], "all")
