"""launch/stage_times.py: the stage times local.sh prints, on the reference machine and here."""

import importlib.util
import json
import pathlib
import re
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "launch" / "stage_times.py"
_spec = importlib.util.spec_from_file_location("stage_times", SCRIPT)
stage_times = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stage_times)


def _write_rows(run: pathlib.Path, rows: list[tuple[int, float]], num_steps: int = 25_000):
  run.mkdir(parents=True, exist_ok=True)
  with open(run / "metrics.jsonl", "a") as f:
    for step, rate in rows:
      row = {"step": step, "loss": 1.0, "steps_per_s": rate, "eta_s": (num_steps - step) / rate}
      f.write(json.dumps(row) + "\n")
    f.write(json.dumps({"step": rows[-1][0], "eval/mean_return": 3.0}) + "\n")  # not a window


def test_the_plan_adds_up_to_the_measured_times():
  # docs/results.md: 36 minutes with one seed, about 29 more per seed.
  assert sum(s.minutes for s in stage_times.plan(1)) == pytest.approx(36.0)
  extra = sum(s.minutes for s in stage_times.plan(2)) - 36.0
  assert extra == pytest.approx(29.2)
  stages = stage_times.plan(2)
  assert [s.name for s in stages] == [
    "collect_random", "behaviour", "collect_agent", "scaled_ql", "bc", "scaled_ql", "bc", "report"
  ]  # fmt: skip
  assert stage_times.position(stages, "scaled_ql", 1) == 5
  assert stage_times.position(stages, "bc", 0) == 4
  assert stage_times.position(stages, "report", 0) == 7


def test_runs_are_matched_to_their_stage_by_local_sh_names():
  assert stage_times.stage_of_run("w/behaviour") is stage_times.BEHAVIOUR
  assert stage_times.stage_of_run("w/scaled_ql_seed2") is stage_times.SCALED_QL
  assert stage_times.stage_of_run("w/bc") is stage_times.BC
  with pytest.raises(ValueError):
    stage_times.stage_of_run("w/dt")


def test_plan_before_any_training_gives_the_reference_times_only():
  stages = stage_times.plan(1)
  lines = stage_times.plan_lines(stages, 1, measured=None)
  # The behaviour stage: 3 minutes; after it 2.5 + 16.2 + 13 + 0.3 = 32.
  assert "this stage 3 min, the 4 stages after it 32 min on the reference machine" in lines[0]
  assert "printed once a training stage has run a few hundred steps" in lines[1]


def test_plan_scales_by_the_median_speed_of_the_last_timed_run(tmp_path):
  run = tmp_path / "behaviour"
  reference = stage_times.BEHAVIOUR.steps_per_s
  # The first window holds compilation; the median ignores it: half the reference's speed.
  _write_rows(run, [(250, 5.0), (500, reference / 2), (750, reference / 2)])
  stages = stage_times.plan(1)
  lines = stage_times.plan_lines(stages, 2, measured=str(run))  # collecting checkpoints 1-2
  # 2.5 minutes there -> 5 here; after it 16.2 + 13 + 0.3 = 29.5 -> 59.
  assert "this stage ~5 min, the 3 stages after it ~59 min" in lines[1]
  assert "0.50x" in lines[1]
  assert stage_times.measured_ratio(str(tmp_path / "missing")) is None


def test_minutes_are_printed_for_people():
  assert [stage_times.minutes(m) for m in (0.3, 12.6, 60, 151.4)] == [
    "<1 min", "13 min", "1 h 00 min", "2 h 31 min"
  ]  # fmt: skip


def test_watch_waits_for_two_new_windows_then_estimates_what_is_left(tmp_path):
  run = tmp_path / "scaled_ql_seed1"
  _write_rows(run, [(250, 99.0), (500, 99.0)])  # an earlier session's: they do not count
  watcher = subprocess.Popen(
    [sys.executable, str(SCRIPT), "watch", "--stage=scaled_ql", "--seed_index=1",
     "--num_seeds=2", f"--run={run}", "--poll_s=0.05"],
    stdout=subprocess.PIPE, text=True,
  )  # fmt: skip
  try:
    time.sleep(0.5)
    _write_rows(run, [(750, 3.0)])  # compilation's window: one is not enough
    time.sleep(0.5)
    assert watcher.poll() is None, "estimated from the compilation window alone"
    _write_rows(run, [(1000, 16.5)])  # half the reference's 33 steps/s
    out, _ = watcher.communicate(timeout=30)
  finally:
    watcher.kill()
  # Training left: 24,000 steps at 16.5/s = 24.2 min; evaluation 3.6 there -> 7.2 here;
  # after it (BC of seed 1, the report): 13.3 there -> 26.6 here; 58 in all.
  assert re.search(r"at step 1000 \(16\.5 steps/s, 0\.50x the reference's 33\)", out), out
  assert "this stage ~31 min more (training 24 min, the rest ~7 min)" in out
  assert "the 2 stages after it ~27 min; ~58 min left in all" in out


def test_local_sh_runs_a_known_stage_at_each_step():
  script = (ROOT / "launch" / "local.sh").read_text()
  names = {s.name for s in stage_times.plan(1)}
  called = re.findall(r"^\s*stage_times (\w+)", script, re.M)
  assert called == ["collect_random", "behaviour", "collect_agent", "report"]
  assert set(called) <= names
  assert 'stage_times "$method" "$seed_index"' in script  # scaled_ql and bc, per seed
  # Every training command is watched, and the watcher is stopped after it.
  pretrains = len(re.findall(r"^\s*(\$PY -m scaled_ql.pretrain|train_behaviour) ", script, re.M))
  starts = len(re.findall(r"^\s*watch_start \S", script, re.M))
  stops = len(re.findall(r"^\s*watch_stop$", script, re.M))
  assert pretrains == starts == stops == 2
  subprocess.run(["bash", "-n", str(ROOT / "launch" / "local.sh")], check=True)


def test_the_command_line_prints_the_plan():
  out = subprocess.run(
    [sys.executable, str(SCRIPT), "plan", "--stage=report", "--num_seeds=1"],
    capture_output=True, text=True, check=True,
  ).stdout  # fmt: skip
  assert "this stage <1 min, the 0 stages after it <1 min on the reference machine" in out
