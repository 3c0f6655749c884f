"""A run directory: what it holds, and the one place that reads and writes it.

    {workdir}/run_info.json          what the run is: method, games, seed, sizes, labels
    {workdir}/operative_config.gin   the gin configuration it ran with
    {workdir}/metrics.jsonl          one JSON row per logged step (TensorBoard: tensorboard/)
    {workdir}/metrics/{n}.jsonl      the same rows in a bucket, in chunks (`metrics_files`)
    {workdir}/checkpoints/{step}/    orbax checkpoints (`checkpointing`)
    {workdir}/eval/{tag}/            results.json and episodes.csv of one evaluation

A workdir is a local path or a bucket URI (`gs://bucket/run`): every read and write goes
through `etils.epath`, which speaks both. Every whole-file write is atomic
(`write_atomically`): a kill leaves the old file or the new. The trainer, evaluation, reports
and compare all go through this module.
"""

import csv
import dataclasses
import datetime
import hashlib
import io
import json
import os
import re
import socket
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np
from etils import epath

from scaled_ql import games

RUN_INFO_FILE = "run_info.json"
OPERATIVE_CONFIG_FILE = "operative_config.gin"
METRICS_FILE = "metrics.jsonl"
METRICS_CHUNKS_SUBDIR = "metrics"
TENSORBOARD_SUBDIR = "tensorboard"
EVAL_SUBDIR = "eval"
RESULTS_FORMAT = "scaled_ql.eval_results/1"
DEFAULT_EVAL_EPSILON = 0.001
_CHUNK_RE = re.compile(r"(\d+)\.jsonl")

PathLike = str | os.PathLike


# ---------------------------------------------------------------------------------------------
# Paths: local files and bucket objects alike.
# ---------------------------------------------------------------------------------------------


def is_uri(path: PathLike) -> bool:
  """Whether `path` names objects in a bucket (`gs://...`) rather than local files."""
  return "://" in os.fspath(path)


def absolute(path: PathLike) -> str:
  """`path` made absolute; a URI unchanged (`os.path.abspath` would mangle `gs://`)."""
  return os.fspath(path) if is_uri(path) else os.path.abspath(path)


def write_atomically(path: PathLike, text: str) -> None:
  """Writes a whole file so that a kill leaves either the old or the new one.

  In a bucket an object write is atomic by itself (the object appears whole when its upload
  completes, and not before), so the object is written in place. On a local disk the text goes
  to `{path}.tmp`, then is renamed over `path` (a rename is atomic on POSIX filesystems; on a
  bucket mounted with gcsfuse it is not, so give such runs their `gs://` URI instead).
  """
  data, path = text.encode(), epath.Path(path)  # Encoded first: a bad text writes nothing.
  if is_uri(path):
    path.write_bytes(data)
    return
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_bytes(data)
  tmp.replace(path)


def check_writable(workdir: PathLike) -> None:
  """Refuses an unwritable workdir before any work (creating it if missing).

  A bucket is probed by writing and deleting a small object (its credentials and permissions
  are only known by trying); a local directory by an unnamed temporary file.
  """
  path, uri = epath.Path(workdir), is_uri(workdir)
  errors = Exception if uri else OSError  # Object-store clients raise their own error types.
  try:
    path.mkdir(parents=True, exist_ok=True)
    if uri:
      probe = path / f".write_probe.{socket.gethostname()}.{os.getpid()}"
      probe.write_text("")
      probe.unlink()
    else:  # A real write: os.access says yes to root even on a read-only filesystem.
      with tempfile.TemporaryFile(dir=workdir):
        pass
  except errors as e:
    reason = getattr(e, "strerror", None) or str(e).strip().split("\n")[0] or type(e).__name__
    hint = " (check the bucket name and your credentials)" if uri else ""
    raise PermissionError(
      f"The workdir {workdir} is not writable ({reason}){hint}; pass another --workdir."
    ) from e


# ---------------------------------------------------------------------------------------------
# Run info and configuration.
# ---------------------------------------------------------------------------------------------


def write_run_info(workdir: PathLike, info: dict, operative_config: str) -> None:
  """Writes `run_info.json` (None values left out) and `operative_config.gin`."""
  text = json.dumps({k: v for k, v in info.items() if v is not None}, indent=2)
  write_atomically(epath.Path(workdir) / OPERATIVE_CONFIG_FILE, operative_config)
  write_atomically(epath.Path(workdir) / RUN_INFO_FILE, text)


def is_run(workdir: PathLike) -> bool:
  return (epath.Path(workdir) / RUN_INFO_FILE).exists()


def read_run_info(workdir: PathLike) -> dict:
  """Reads a run's `run_info.json`, with a clear error when the run does not exist."""
  path = epath.Path(workdir) / RUN_INFO_FILE
  if not path.exists():
    raise FileNotFoundError(
      f"{path} does not exist: {workdir} is not a training run directory "
      "(run `python -m scaled_ql.pretrain --workdir=...` first)."
    )
  return json.loads(path.read_text())


def check_same_run(workdir: PathLike, run_info: dict, identity: Sequence[str]) -> None:
  """Refuses to continue a run whose `identity` fields (games, seed, model...) changed."""
  if not is_run(workdir):
    return
  stored = read_run_info(workdir)
  run_info = json.loads(json.dumps(run_info))  # Compare in the stored form (tuples -> lists).
  changed = [
    f"  {key}: {stored[key]!r} -> {run_info.get(key)!r}"
    for key in identity
    if key in stored and stored[key] != run_info.get(key)
  ]
  if changed:
    raise ValueError(
      f"{workdir} holds a run with a different configuration; resuming it would not continue "
      "that run:\n" + "\n".join(changed) + "\nUse a new --workdir, or restore these values."
    )


# ---------------------------------------------------------------------------------------------
# Metrics.
# ---------------------------------------------------------------------------------------------


def metrics_files(workdir: PathLike) -> list[epath.Path]:
  """The files holding a run's logged rows, oldest rows first.

  On a local disk the trainer appends to `metrics.jsonl`. A bucket's objects cannot be appended
  to, so there the rows go to numbered chunks `metrics/{n:06d}.jsonl` instead, each rewritten
  whole while it grows (`metrics.MetricWriter`); a run moved from a disk to a bucket has both,
  `metrics.jsonl` holding the older rows.
  """
  root = epath.Path(workdir)
  files = [root / METRICS_FILE] if (root / METRICS_FILE).exists() else []
  return files + [path for _, path in metrics_chunks(workdir)]


def metrics_chunks(workdir: PathLike) -> list[tuple[int, epath.Path]]:
  """(number, path) of each chunk of rows under `{workdir}/metrics/`, in order."""
  directory = epath.Path(workdir) / METRICS_CHUNKS_SUBDIR
  if not directory.is_dir():
    return []
  found = ((_CHUNK_RE.fullmatch(path.name), path) for path in directory.iterdir())
  return sorted((int(match.group(1)), path) for match, path in found if match)


def metrics_chunk(workdir: PathLike, number: int) -> epath.Path:
  return epath.Path(workdir) / METRICS_CHUNKS_SUBDIR / f"{number:06d}.jsonl"


def read_jsonl(path: PathLike) -> list[dict]:
  """Reads a `metrics.jsonl` file (or chunk) back.

  A last line cut short (the process was killed while writing it) is skipped; a bad line
  elsewhere is an error naming the file and line.
  """
  lines = [line for line in io.StringIO(epath.Path(path).read_text()) if line.strip()]
  rows = []
  for number, line in enumerate(lines, start=1):
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError as e:
      if number == len(lines) and not line.endswith("\n"):
        break
      raise ValueError(f"{path}, line {number}: not a JSON object ({e}).") from e
  return rows


def read_metrics(workdir: PathLike) -> list[dict]:
  """The run's logged rows in order (`[]` before the first log)."""
  return [row for path in metrics_files(workdir) for row in read_jsonl(path)]


def steps_with(workdir: PathLike, prefix: str) -> set[int]:
  """Steps whose logged row has a metric starting with `prefix`."""
  return {row["step"] for row in read_metrics(workdir) if any(k.startswith(prefix) for k in row)}


# ---------------------------------------------------------------------------------------------
# Evaluation results.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class GameResult:
  """Per-episode outcomes of one game, in (environment, episode) order."""

  game_id: int
  num_actions: int
  returns: list[float]  # Unclipped game scores.
  lengths: list[int]  # Agent steps (4 frames each).
  truncated: list[bool]  # True when the episode hit the step cap.


@dataclasses.dataclass
class EvalResults:
  """What an evaluation measured and under which protocol."""

  games: dict[str, GameResult]
  protocol: dict[str, Any]
  protocol_name: str  # "dqn", "mgdt" or "custom".
  epsilon: float
  variant: int
  seed: int
  num_envs_per_game: int
  # Environment steps taken by all envs (also those past their quota), and the stepping loop's
  # time; in a results file that merged several evaluations (`write_results`), their totals.
  agent_steps: int
  wall_time_s: float
  ale_version: str = ""
  checkpoint_step: int | None = None
  created: str = ""  # When it was written (UTC, ISO 8601): orders evaluations of one checkpoint.

  def mean_returns(self) -> dict[str, float]:
    return {game: float(np.mean(r.returns)) for game, r in self.games.items()}


def _settings(results: EvalResults) -> dict[str, Any]:
  """What makes two evaluations of one checkpoint comparable game by game."""
  return {
    name: getattr(results, name)
    for name in ("protocol", "epsilon", "variant", "seed", "num_envs_per_game", "ale_version")
  }


def results_tag(results: EvalResults) -> str:
  """Directory name of one evaluation: checkpoint step, protocol, variant and seed.

  A custom protocol or an epsilon other than 0.001 adds a fingerprint of those settings, so
  that evaluations under different settings never share a directory (e.g. step caps of 50 and
  60 steps are both "custom").
  """
  step = "none" if results.checkpoint_step is None else f"{results.checkpoint_step:09d}"
  tag = f"step_{step}_{results.protocol_name}"
  tag += f"_v{results.variant}" if results.variant else ""
  tag += f"_seed{results.seed}" if results.seed else ""
  if results.protocol_name == "custom" or results.epsilon != DEFAULT_EVAL_EPSILON:
    settings = json.dumps([results.protocol, results.epsilon], sort_keys=True)
    tag += "_" + hashlib.sha256(settings.encode()).hexdigest()[:8]
  return tag


def latest(results: Sequence[EvalResults]) -> EvalResults:
  """The evaluation of the latest checkpoint; of several of one checkpoint, the last written."""
  return max(
    results, key=lambda r: (-1 if r.checkpoint_step is None else r.checkpoint_step, r.created)
  )


def write_results(
  workdir: PathLike, results: EvalResults, checkpoint_step: int | None = None
) -> str:
  """Writes `{workdir}/eval/{tag}/results.json` and `episodes.csv`.

  An evaluation of the same checkpoint under the same settings (`results_tag`) that is already
  there is merged with this one game by game: evaluating a few games again, or more games,
  replaces those games' results and keeps the others'. One under other settings with the same
  tag (another num_envs_per_game or ALE version) is replaced.

  Args:
    workdir: the run directory.
    results: from `evaluate.evaluate`.
    checkpoint_step: the evaluated checkpoint's step (overrides `results.checkpoint_step`).

  Returns:
    The path of results.json.
  """
  if checkpoint_step is not None:
    results.checkpoint_step = int(checkpoint_step)
  out_dir = epath.Path(workdir) / EVAL_SUBDIR / results_tag(results)
  out_dir.mkdir(parents=True, exist_ok=True)
  path = out_dir / "results.json"
  if path.exists():
    previous = read_results(path)
    if _settings(previous) == _settings(results):
      results = dataclasses.replace(
        results,
        games={**previous.games, **results.games},
        agent_steps=previous.agent_steps + results.agent_steps,
        wall_time_s=previous.wall_time_s + results.wall_time_s,
      )
  results.created = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")
  record = dataclasses.asdict(results)
  record["format"] = RESULTS_FORMAT
  for game, r in record["games"].items():
    r["mean_return"] = float(np.mean(r["returns"]))
    r["std_return"] = float(np.std(r["returns"]))
    known = game in games.HUMAN_SCORES
    r["human_normalized"] = (
      float(games.human_normalized_score(game, r["mean_return"])) if known else None
    )
  write_atomically(path, json.dumps(record, indent=1))
  rows = [["game", "game_id", "episode", "return", "length", "truncated"]]
  for game, r in results.games.items():
    for k, (ret, length, trunc) in enumerate(zip(r.returns, r.lengths, r.truncated, strict=True)):
      rows.append([game, r.game_id, k, ret, length, int(trunc)])
  write_atomically(out_dir / "episodes.csv", _csv_text(rows))
  return os.fspath(path)


def _csv_text(rows: Sequence[Sequence]) -> str:
  text = io.StringIO()
  csv.writer(text).writerows(rows)
  return text.getvalue()


def read_results(path: PathLike) -> EvalResults:
  """Reads a results.json written by `write_results`."""
  record = json.loads(epath.Path(path).read_text())
  if record.get("format") != RESULTS_FORMAT:
    raise ValueError(f"{path} is not a {RESULTS_FORMAT} file (format={record.get('format')}).")
  fields = {f.name for f in dataclasses.fields(GameResult)}
  per_game = {
    game: GameResult(**{k: v for k, v in r.items() if k in fields})
    for game, r in record["games"].items()
  }
  kwargs = {
    f.name: record[f.name]
    for f in dataclasses.fields(EvalResults)
    if f.name != "games" and f.name in record
  }
  return EvalResults(games=per_game, **kwargs)


def find_results(workdir: PathLike) -> list[str]:
  """Paths of all results.json files of a run, sorted by tag (so by checkpoint step)."""
  eval_dir = epath.Path(workdir) / EVAL_SUBDIR
  if not eval_dir.is_dir():
    return []
  paths = [eval_dir / name / "results.json" for name in sorted(d.name for d in eval_dir.iterdir())]
  return [os.fspath(p) for p in paths if p.exists()]


def read_all_results(workdir: PathLike) -> list[EvalResults]:
  """Every evaluation of a run, in tag order."""
  return [read_results(path) for path in find_results(workdir)]
