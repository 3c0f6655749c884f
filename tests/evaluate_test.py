"""Tests for scaled_ql.evaluate on real ALE games (ale-py ships the ROMs)."""

import csv
import hashlib
import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

from scaled_ql import atari, evaluate, games, runs, types, video

_noop_policy = types.FunctionPolicy(lambda obs, game_id: np.zeros(len(obs), np.int32))


def _open_loop_policy(num_actions, frames_seen):
  """A fixed pseudo-random action sequence (the same on every run, whatever the frames); it
  records a digest of every observation batch it is shown in `frames_seen`."""
  rng = np.random.default_rng(1234)

  def policy(obs, game_id):
    del game_id
    frames_seen.append(hashlib.sha1(obs.tobytes()).hexdigest())
    return rng.integers(0, num_actions, len(obs), dtype=np.int32)

  return types.FunctionPolicy(policy)


def test_random_policy_breakout_score_is_in_known_range():
  # epsilon=1: every action is the evaluator's uniform random action over Breakout's 4 actions.
  results = evaluate.evaluate(_noop_policy, ["Breakout"], 8, epsilon=1.0, num_envs_per_game=4)
  breakout = results.games["Breakout"]
  assert len(breakout.returns) == 8 and not any(breakout.truncated)
  # dqn_zoo's random-agent Breakout score is 1.7; 8 random episodes average well inside [0.5, 4].
  assert 0.5 <= np.mean(breakout.returns) <= 4.0
  assert all(50 < n < 1000 for n in breakout.lengths)
  assert results.protocol_name == "dqn" and results.protocol["sticky_action_prob"] == 0.25
  assert results.agent_steps >= sum(breakout.lengths)


def test_episode_cap_holds_and_epsilon_uses_each_games_actions():
  protocol = atari.Protocol(max_episode_steps=40)
  # NOOP never launches the ball in Breakout, so only the cap can end its episodes.
  capped = evaluate.evaluate(_noop_policy, ["Breakout"], 3, epsilon=0.0, protocol=protocol,
                             num_envs_per_game=2)  # fmt: skip
  assert capped.games["Breakout"].lengths == [40, 40, 40]
  assert capped.games["Breakout"].truncated == [True, True, True]
  assert capped.games["Breakout"].returns == [0.0, 0.0, 0.0]
  assert capped.protocol_name == "custom"
  # Two games with 4 and 9 actions: random actions must stay in each game's own range (the
  # environments reject out-of-range actions).
  mixed = evaluate.evaluate(_noop_policy, ["Breakout", "MsPacman"], 2, epsilon=1.0,
                            protocol=protocol)  # fmt: skip
  assert all(len(r.lengths) == 2 and max(r.lengths) <= 40 for r in mixed.games.values())


def test_deterministic_for_a_seed_and_sticky_actions_change_the_game():
  def run(sticky, seed):
    frames = []
    policy = _open_loop_policy(games.num_actions("Breakout"), frames)
    protocol = atari.Protocol(sticky_action_prob=sticky, max_episode_steps=300)
    r = evaluate.evaluate(policy, ["Breakout"], 2, epsilon=0.0, protocol=protocol, seed=seed)
    return r.games["Breakout"].returns, r.games["Breakout"].lengths, frames

  # Same seed, same episodes and the same frames.
  assert run(0.25, seed=0) == run(0.25, seed=0)
  # Without sticky actions (and no no-op starts) ALE is deterministic: the same action sequence
  # gives the same frames whatever the seed.
  assert run(0.0, seed=0) == run(0.0, seed=1)
  # With sticky actions, ALE sometimes repeats the previous action instead: the executed action
  # stream, hence the frames, depends on the seed and differs from the sticky-free one.
  assert run(0.25, seed=0)[2] != run(0.25, seed=1)[2]
  assert run(0.25, seed=0)[2] != run(0.0, seed=0)[2]


def test_one_batched_policy_call_per_step_with_game_ids():
  calls = []

  def policy(obs, game_id):
    calls.append((obs.shape, obs.dtype, game_id.copy()))
    return np.zeros(len(obs), np.int32)

  protocol = atari.Protocol(max_episode_steps=10)
  results = evaluate.evaluate(types.FunctionPolicy(policy), ["Breakout", "Pong"], 2,
                              game_ids=[7, 3], protocol=protocol, epsilon=0.0)  # fmt: skip
  # 2 games x 2 envs, every env plays one 10-step episode: 10 steps, one call each.
  assert len(calls) == 10
  for shape, dtype, game_id in calls:
    assert shape == (4, 84, 84, 4) and dtype == np.uint8
    np.testing.assert_array_equal(game_id, [7, 7, 3, 3])
  assert results.games["Pong"].game_id == 3 and results.games["Pong"].num_actions == 6


def test_mgdt_protocol_is_recorded():
  results = evaluate.evaluate(_noop_policy, ["Pong"], 1, protocol=atari.Protocol.mgdt())
  assert results.protocol_name == "mgdt"
  assert results.protocol["jpeg_quality"] == 95 and results.protocol["sticky_action_prob"] == 0.0
  assert len(results.games["Pong"].returns) == 1


def test_bad_input_is_explained():
  with pytest.raises(ValueError, match="Unknown Atari game"):
    evaluate.evaluate(_noop_policy, ["Breakout", "Brekaout"], 1)
  with pytest.raises(ValueError, match="which has 4 actions"):
    evaluate.evaluate(types.FunctionPolicy(lambda o, g: np.full(len(o), 5)), ["Breakout"], 1)
  with pytest.raises(TypeError, match="FunctionPolicy"):
    evaluate.evaluate(lambda o, g: np.zeros(len(o), np.int32), ["Breakout"], 1)
  with pytest.raises(ValueError, match="no policy head for"):
    evaluate._parse_games("Breakout,Pong", ["Breakout", "Qbert"])
  assert evaluate._parse_games("Qbert", ["Breakout", "Qbert"]) == (["Qbert"], [1])


def test_results_files_round_trip(tmp_path):
  protocol = atari.Protocol(max_episode_steps=20)
  results = evaluate.evaluate(_noop_policy, ["Breakout"], 2, protocol=protocol, epsilon=0.5)
  path = runs.write_results(str(tmp_path), results, checkpoint_step=1234)
  tag = os.path.basename(os.path.dirname(path))
  assert re.fullmatch(r"step_000001234_custom_[0-9a-f]{8}", tag) and path.startswith(str(tmp_path))
  with open(path) as f:
    record = json.load(f)
  import ale_py

  assert record["ale_version"] == ale_py.__version__
  assert record["checkpoint_step"] == 1234 and record["epsilon"] == 0.5
  assert record["protocol"]["max_episode_steps"] == 20
  assert record["games"]["Breakout"]["human_normalized"] == pytest.approx(
    games.human_normalized_score("Breakout", np.mean(results.games["Breakout"].returns))
  )
  with open(os.path.join(os.path.dirname(path), "episodes.csv")) as f:
    rows = list(csv.DictReader(f))
  assert [int(r["length"]) for r in rows] == results.games["Breakout"].lengths
  again = runs.read_results(path)
  assert again.games == results.games and again.checkpoint_step == 1234
  assert runs.find_results(str(tmp_path)) == [path]


def test_results_of_one_checkpoint_merge_by_game_and_never_collide(tmp_path):
  workdir, capped = str(tmp_path), atari.Protocol(max_episode_steps=20)

  def write(game_names, protocol=capped, seed=0):
    results = evaluate.evaluate(_noop_policy, game_names, 1, protocol=protocol, seed=seed)
    return runs.write_results(workdir, results, checkpoint_step=7), results

  both_path, both = write(["Breakout", "Pong"])
  # The same checkpoint and settings, one game again: that game is replaced, the other kept.
  pong_path, pong = write(["Pong"])
  assert pong_path == both_path
  merged = runs.read_results(both_path)
  assert set(merged.games) == {"Breakout", "Pong"}
  assert merged.games["Breakout"] == both.games["Breakout"]
  assert merged.games["Pong"] == pong.games["Pong"]
  assert merged.agent_steps == both.agent_steps + pong.agent_steps
  # Another step cap (also "custom") and another seed get their own directories.
  other_cap, _ = write(["Pong"], protocol=atari.Protocol(max_episode_steps=30))
  other_seed, _ = write(["Pong"], seed=1)
  assert len({both_path, other_cap, other_seed}) == 3 and "_seed1_" in other_seed
  assert len(runs.find_results(workdir)) == 3
  # Of several evaluations of one checkpoint, the latest is the last written.
  assert runs.latest(runs.read_all_results(workdir)).seed == 1


def test_trainer_hook_writes_results_and_returns_scalars(tmp_path):
  eval_fn = evaluate.make_eval_fn(
    num_episodes=1, protocol=atari.Protocol(max_episode_steps=15), videos=True
  )
  scalars = eval_fn(_noop_policy, ["Breakout", "Pong"], 500, str(tmp_path))
  assert set(scalars) == {"eval/Breakout/return", "eval/Pong/return", "eval/hns_iqm"}
  assert np.isfinite(scalars["eval/hns_iqm"])
  assert len(runs.find_results(str(tmp_path))) == 1
  videos = sorted(os.listdir(tmp_path / "videos" / "step_000000500"))
  assert videos == ["Breakout_v0.mp4", "Pong_v0.mp4"]


def test_cli_explains_a_missing_run_or_checkpoint(tmp_path):
  import subprocess
  import sys

  def cli(workdir):
    proc = subprocess.run(
      [sys.executable, "-m", "scaled_ql.evaluate", f"--workdir={workdir}", "--num_episodes=1"],
      capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.stderr.strip().splitlines()[-1]

  message = cli(tmp_path / "nope")
  assert "does not exist" in message and "scaled_ql.pretrain" in message
  message = cli(tmp_path)
  assert "run_info.json" in message and "scaled_ql.pretrain" in message


def test_video_of_each_games_first_episode(tmp_path):
  # Breakout's first episode is cut at 30 steps; Pong's envs play on, so its video is the
  # first episode's 30 steps too, written when that episode ends.
  protocol = atari.Protocol(max_episode_steps=30)
  recorded = []

  class Recorder(types.Policy):  # Keeps the frames env 0 of each game acted on.
    def __call__(self, obs, game_id):
      recorded.append(obs[[0, 2], :, :, -1].copy())
      return np.zeros(len(obs), np.int32)

  results = evaluate.evaluate(Recorder(), ["Breakout", "Pong"], 2, num_envs_per_game=2,
                              protocol=protocol, variant=0, video_dir=str(tmp_path / "v"))  # fmt: skip
  for g, game in enumerate(["Breakout", "Pong"]):
    capture = cv2.VideoCapture(str(tmp_path / "v" / f"{game}_v0.mp4"))
    frames = []
    while (frame := capture.read())[0]:
      frames.append(frame[1][:, :, 0])
    capture.release()
    # One frame per agent step of the first episode, 4x the observation size, close to it.
    assert len(frames) == results.games[game].lengths[0] == 30
    assert frames[0].shape == (336, 336)
    first = cv2.resize(frames[5], (84, 84), interpolation=cv2.INTER_AREA).astype(float)
    assert np.abs(first - recorded[5][g]).mean() < 8.0
  # The frame sheet: a labelled row per video, frames 0, 15 and 29 (evenly spaced).
  sheet_path = str(tmp_path / "sheet.png")
  video.frame_sheet([(g, str(tmp_path / "v" / f"{g}_v0.mp4")) for g in ("Breakout", "Pong")],
                    sheet_path, num_frames=3)  # fmt: skip
  sheet = cv2.imread(sheet_path, cv2.IMREAD_GRAYSCALE)
  assert sheet.shape == (2 * (28 + 336), 3 * 336 + 2 * 4)
  pong_last = sheet[28 + 336 + 28 :, 2 * (336 + 4) :]
  np.testing.assert_allclose(pong_last, frames[29], atol=1)  # `frames`: Pong's, read above.


def test_frame_sheet_cli_names_a_bad_video(tmp_path):
  out = subprocess.run(
    [sys.executable, "-m", "scaled_ql.video", f"--videos=scratch={tmp_path / 'missing.mp4'}",
     f"--output={tmp_path / 'sheet.png'}"], capture_output=True, text=True, timeout=120,
  )  # fmt: skip
  assert out.returncode == 2 and "Traceback" not in out.stderr
  assert "missing.mp4" in out.stderr and "LABEL=PATH" in out.stderr


def test_eta_bound_lets_every_unfinished_episode_run_to_the_cap():
  # Env 0: its current episode (5 steps in) and one more; env 1: its last, 7 steps in; env 2: done.
  done_count, quota = np.array([0, 1, 2]), np.array([2, 2, 2])
  assert evaluate._max_calls_left(done_count, quota, np.array([5, 7, 0]), 10) == 15
  assert evaluate._max_calls_left(quota, quota, np.array([5, 7, 0]), 10) == 0
