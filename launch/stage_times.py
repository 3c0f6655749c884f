"""How long the stages of launch/local.sh take: on the reference machine, and on this one.

    python launch/stage_times.py plan --stage=NAME [--seed_index=I] --num_seeds=N [--measured=RUN]
    python launch/stage_times.py watch --stage=NAME [--seed_index=I] --num_seeds=N --run=RUN

The stage times below were measured on the reference machine (docs/benchmarks.md: 2 vCPUs of
an AMD EPYC, Zen 4, with AVX-512), a fresh run with nothing beside it: 36 minutes for one seed.
On another machine they scale with its speed, and the speed measured here is training's: a
training run's steps/s (its metrics.jsonl) over the reference machine's for the same stage.
Collection and evaluation are scaled by that same ratio, which is an assumption: they were
never timed on another machine (docs/benchmarks.md).

`plan`, at the start of a stage, prints the stage's time and that of the stages after it on
the reference machine, and on this machine when a training run (`--measured`) has been timed.
`watch`, started beside a training stage, waits until the run has logged two windows in this
session (the first holds compilation and the data pool's fill: with `log_every_steps = 250`,
the estimate comes after 500 steps), prints the stage's time left and the stages' after it,
and exits. Standard library only, so that it starts at once beside the training.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import statistics
import sys
import time

REFERENCE = "the reference machine (2 vCPUs of an AMD EPYC, Zen 4, AVX-512)"


@dataclasses.dataclass(frozen=True)
class Stage:
  """One stage of launch/local.sh, as timed on the reference machine.

  Attributes:
    name: the stage, as local.sh names it (`--stage`).
    minutes: the whole stage.
    train_minutes: of which training (0: no training).
    steps_per_s: the reference machine's training rate.
  """

  name: str
  minutes: float
  train_minutes: float = 0.0
  steps_per_s: float = 0.0


# docs/results.md, "What it runs": the fresh run alone that took 36 minutes.
COLLECT_RANDOM = Stage("collect_random", 1.0)  # With the set-up check.
# 25,000 steps in 3 minutes, start-up included: the rate is that average.
BEHAVIOUR = Stage("behaviour", 3.0, train_minutes=3.0, steps_per_s=25_000 / 180)
COLLECT_AGENT = Stage("collect_agent", 2.5)
SCALED_QL = Stage("scaled_ql", 12.6 + 3.6, train_minutes=12.6, steps_per_s=33.0)
BC = Stage("bc", 9.0 + 4.0, train_minutes=9.0, steps_per_s=49.0)
# The rest of the 36 minutes: the report, and rounding.
REPORT = Stage("report", 36.0 - 35.7)
TRAINING = {stage.name: stage for stage in (BEHAVIOUR, SCALED_QL, BC)}


def plan(num_seeds: int) -> list[Stage]:
  """The stages local.sh runs with `num_seeds` seeds, in order."""
  return [COLLECT_RANDOM, BEHAVIOUR, COLLECT_AGENT, *[SCALED_QL, BC] * num_seeds, REPORT]


def position(stages: list[Stage], name: str, seed_index: int) -> int:
  """Where stage `name` of the `seed_index`-th seed is in `stages`."""
  matches = [i for i, stage in enumerate(stages) if stage.name == name]
  return matches[seed_index if len(matches) > 1 else 0]


def stage_of_run(run: str) -> Stage:
  """The training stage of a run directory, by local.sh's names (`scaled_ql_seed1` included)."""
  name = pathlib.Path(run).name
  for stage in (BEHAVIOUR, SCALED_QL, BC):
    if name == stage.name or name.startswith(f"{stage.name}_seed"):
      return stage
  raise ValueError(f"not a training run of launch/local.sh: {run}")


def read_rows(run: str) -> list[dict]:
  """The logged training windows of a run (rows with `steps_per_s`); none if it has no log."""
  path = pathlib.Path(run) / "metrics.jsonl"
  if not path.exists():
    return []
  rows = []
  for line in path.read_text().splitlines():
    try:
      row = json.loads(line)
    except json.JSONDecodeError:  # A line being written.
      continue
    if "steps_per_s" in row:
      rows.append(row)
  return rows


def measured_ratio(run: str) -> tuple[float, float] | None:
  """(steps/s, ratio to the reference) of a run, over its logged windows (the median, so that
  the windows holding compilation do not count), or None if it has logged fewer than two."""
  rows = read_rows(run)
  if len(rows) < 2:
    return None
  rate = statistics.median(row["steps_per_s"] for row in rows)
  return rate, rate / stage_of_run(run).steps_per_s


def minutes(value: float) -> str:
  if value < 1:
    return "<1 min"
  if value < 60:
    return f"{value:.0f} min"
  return f"{int(value // 60)} h {value % 60:02.0f} min"


def _after(stages: list[Stage], index: int) -> tuple[str, float]:
  """('the N stages after it', their minutes on the reference machine)."""
  later = stages[index + 1 :]
  words = f"the {len(later)} stage{'' if len(later) == 1 else 's'} after it"
  return words, sum(stage.minutes for stage in later)


def plan_lines(stages: list[Stage], index: int, measured: str | None) -> list[str]:
  """What `plan` prints at the start of stage `index`."""
  stage = stages[index]
  after, later = _after(stages, index)
  lines = [f"   time: this stage {minutes(stage.minutes)}, {after} {minutes(later)} on {REFERENCE}"]
  timed = measured_ratio(measured) if measured else None
  if timed is None:
    lines.append("   time here: printed once a training stage has run a few hundred steps")
  else:
    rate, ratio = timed
    lines.append(
      f"   time here: this stage ~{minutes(stage.minutes / ratio)}, {after} "
      f"~{minutes(later / ratio)} ({pathlib.Path(measured).name} trained at {rate:.1f} steps/s, "
      f"{ratio:.2f}x the reference's {stage_of_run(measured).steps_per_s:.0f}; collection and "
      "evaluation assumed to scale alike)"
    )
  return lines


def watch_line(stages: list[Stage], index: int, row: dict) -> str:
  """What `watch` prints from a run's latest logged window `row` (step, steps/s, eta_s)."""
  stage = stages[index]
  ratio = row["steps_per_s"] / stage.steps_per_s
  training = row["eta_s"] / 60
  rest = (stage.minutes - stage.train_minutes) / ratio
  after, later = _after(stages, index)
  return (
    f"   time here, at step {row['step']} ({row['steps_per_s']:.1f} steps/s, {ratio:.2f}x "
    f"the reference's {stage.steps_per_s:.0f}): this stage ~{minutes(training + rest)} more "
    f"(training {minutes(training)}, the rest ~{minutes(rest)}), {after} "
    f"~{minutes(later / ratio)}; ~{minutes(training + rest + later / ratio)} left in all"
  )


def watch(stages: list[Stage], index: int, run: str, poll_s: float, windows: int = 2) -> str:
  """Waits for `windows` new logged windows of `run` (those logged before it started do not
  count), then returns the line to print; returns '' if local.sh has gone."""
  before = max((row["step"] for row in read_rows(run)), default=-1)
  parent = os.getppid()
  while os.getppid() == parent:
    new = [row for row in read_rows(run) if row["step"] > before]
    if len(new) >= windows:
      return watch_line(stages, index, new[-1])
    time.sleep(poll_s)
  return ""


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("command", choices=["plan", "watch"])
  parser.add_argument("--stage", required=True, choices=sorted({s.name for s in plan(1)}))
  parser.add_argument("--seed_index", type=int, default=0)
  parser.add_argument("--num_seeds", type=int, default=1)
  parser.add_argument("--measured", help="plan: a trained run whose speed scales the times")
  parser.add_argument("--run", help="watch: the run being trained")
  parser.add_argument("--poll_s", type=float, default=5.0)
  args = parser.parse_args(argv)
  stages = plan(args.num_seeds)
  index = position(stages, args.stage, args.seed_index)
  if args.command == "plan":
    print("\n".join(plan_lines(stages, index, args.measured)), flush=True)
  else:
    line = watch(stages, index, args.run, args.poll_s)
    if line:
      print(f"\n{line}", flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
