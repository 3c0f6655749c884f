"""scaled_ql.report.archive: runs' small files kept apart from the runs give the same table."""

import os

import pytest

from scaled_ql import games, runs
from scaled_ql.report import archive, compare

_GAMES = ["Breakout", "Pong"]


def _run(workdir, r, seed, **info):
  """A run as the trainer and the evaluator leave it (their own writers), with a checkpoint."""
  os.makedirs(os.path.join(workdir, "checkpoints", "10"))
  runs.write_run_info(workdir, dict(info, game_names=_GAMES, seed=seed, phase="pretrain"),
                      f"data.ReplayDataset.shard_dir = '{os.path.dirname(workdir)}/shards'\n")  # fmt: skip
  per_game = {g: runs.GameResult(k, games.num_actions(g), [r + k, r + 2 * k, r], [10] * 3,
                                 [False] * 3) for k, g in enumerate(_GAMES)}  # fmt: skip
  runs.write_results(workdir, runs.EvalResults(per_game, {}, "dqn", 0.001, 0, 0, 1, 30, 1.0), 10)


@pytest.fixture()
def live(tmp_path):
  root = tmp_path / "machine" / "workdirs"
  for seed in (0, 1):
    suffix = f"_seed{seed}" if seed else ""
    _run(str(root / f"scaled_ql{suffix}"), 5.0 + seed, seed, method="scaled_ql")
    _run(str(root / f"bc{suffix}"), 2.0 + seed, seed, method="bc")
    _run(str(root / f"q_guided_bc{suffix}"), 4.0, seed, method="q_guided_bc",
         init_from={"source": str(root / f"bc{suffix}")},
         method_config={"critic_from": str(root / f"scaled_ql{suffix}" / "checkpoints" / "10")})  # fmt: skip
  for game in _GAMES:
    os.makedirs(root / "replay" / game / "1")
    (root / "replay" / game / "1" / "episodes.csv").write_text(
      "suffix,return,length,truncated\n0,1.0,10,0\n0,2.0,10,0\n1,4.0,10,0\n1,3.0,10,0\n"
    )
  return root


def test_an_archive_gives_the_live_runs_table_without_their_paths(live, tmp_path):
  names = ["scaled_ql", "bc", "q_guided_bc", "scaled_ql_seed1", "bc_seed1", "q_guided_bc_seed1"]
  output = str(tmp_path / "results" / "embedded_default")
  archived = archive.archive([str(live / n) for n in names], output, str(live / "replay"))
  assert archived == [os.path.join(output, n) for n in names]
  want = compare.compare([str(live / n) for n in names], str(live / "replay"), "dqn")
  got = compare.compare(archived, os.path.join(output, "replay"), "dqn")
  assert got == want.replace(str(live), output)
  assert "paired, 2 seeds" in got  # the Q-guided runs still pair with their proposals
  for folder, _, files in os.walk(output):
    assert "checkpoints" not in folder
    for name in files:
      with open(os.path.join(folder, name)) as f:
        assert str(live) not in f.read(), name
  info = runs.read_run_info(os.path.join(output, "q_guided_bc"))
  assert info["init_from"]["source"] == os.path.join(output, "bc")


def test_what_is_not_a_run_is_named(live, tmp_path):
  with pytest.raises(ValueError, match=r"hold no run_info.json"):
    archive.archive([str(live / "replay")], str(tmp_path / "out"))
  os.makedirs(tmp_path / "other")
  _run(str(tmp_path / "other" / "bc"), 1.0, 0, method="bc")
  with pytest.raises(ValueError, match="two runs share a directory name"):
    archive.archive([str(live / "bc"), str(tmp_path / "other" / "bc")], str(tmp_path / "out"))


def test_paths_outside_the_runs_folder_are_not_kept(live, tmp_path):
  """A fine-tuning run names its starting run and shards, which sit outside its own folder."""
  run = live / "transfer" / "offline" / "Pong" / "pretrained_seed0"
  _run(str(run), 3.0, 0, method="scaled_ql", init_from={"source": str(live / "scaled_ql")})
  archive.archive([str(run)], str(tmp_path / "out"))
  info = runs.read_run_info(str(tmp_path / "out" / "pretrained_seed0"))
  assert info["init_from"]["source"] == "OUTSIDE/scaled_ql"
  for folder, _, files in os.walk(tmp_path / "out"):
    for name in files:
      with open(os.path.join(folder, name)) as f:
        assert str(live) not in f.read(), name
