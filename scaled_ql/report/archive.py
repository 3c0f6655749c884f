r"""Keeps what a report needs of finished runs, small enough to commit, so results outlive runs.

  python -m scaled_ql.report.compare --runs=workdirs/local/scaled_ql,workdirs/local/bc \
      --data_dir=workdirs/local/replay --archive=results/embedded_default

prints the table and copies each run's run_info.json, operative_config.gin, metrics.jsonl and
evaluations (eval/, results.json and episodes.csv), never its checkpoints, into OUTPUT/<run's
directory name>, and the collector's episode logs (DATA_DIR/<Game>/<run>/episodes.csv) into
OUTPUT/replay. The runs' common parent directory is written as OUTPUT wherever the copied files
name it, so a Q-guided run's proposal and critic name their archived runs (pairs stay pairs);
any other local path they name (a fine-tuning run's starting run, its shards) is written as
OUTSIDE/ and the part below the directory it shares with the runs (OUTSIDE/scaled_ql), so no
machine's paths are kept. `python -m scaled_ql.report.compare --runs=OUTPUT/scaled_ql,...
--data_dir=OUTPUT/replay` then gives the same table as the live runs, on any machine; runs
archived by several sessions (other seeds) sit side by side and form one table.
"""

import os
import re
import shutil
from collections.abc import Sequence

from etils import epath

from scaled_ql import runs

_RUN_FILES = ("run_info.json", "operative_config.gin", "metrics.jsonl")


def archive(run_dirs: Sequence[str], output: str, data_dir: str | None = None) -> list[str]:
  """Copies the runs' small files (and the data's episode logs) into `output`.

  Args:
    run_dirs: run directories, each with run_info.json; their names must differ.
    output: the archive's directory; a run already there is replaced.
    data_dir: the collector's output, for its `<Game>/<run>/episodes.csv` logs.

  Returns:
    The archived run directories, in the order given.

  Raises:
    ValueError: a directory is not a run, or two runs share a name.
  """
  run_dirs = [os.path.abspath(d) for d in run_dirs]
  names = [os.path.basename(d) for d in run_dirs]
  missing = [d for d in run_dirs if not runs.is_run(d)]
  if missing:
    raise ValueError(f"--runs: {missing} hold no run_info.json (not training runs).")
  if len(set(names)) != len(names):
    raise ValueError(f"--runs: two runs share a directory name ({names}); archive them apart.")
  root = os.path.commonpath([os.path.dirname(d) for d in run_dirs])
  def rewrite(text: str) -> str:
    return _outside(text, root).replace(root + os.sep, output.rstrip("/") + "/")

  archived = []
  for run_dir, name in zip(run_dirs, names, strict=True):
    target = os.path.join(output, name)
    shutil.rmtree(target, ignore_errors=True)
    for relative in [f for f in _RUN_FILES if os.path.exists(os.path.join(run_dir, f))] + [
      os.path.relpath(p, run_dir) for p in _eval_files(run_dir)
    ]:  # fmt: skip
      _copy_text(os.path.join(run_dir, relative), os.path.join(target, relative), rewrite)
    archived.append(target)
  if data_dir:
    for path in sorted(epath.Path(data_dir).glob("*/*/episodes.csv")):
      relative = os.path.relpath(os.fspath(path), data_dir)
      _copy_text(os.fspath(path), os.path.join(output, "replay", relative), rewrite)
  return archived


# A quoted absolute local path, as JSON and gin files write it.
_QUOTED_PATH = re.compile(r"""(?<=["'])/[^"'\n]*(?=["'])""")


def _outside(text: str, root: str) -> str:
  """Local paths outside the runs' common parent `root`, as OUTSIDE/<below what they share>."""
  def relative(match: re.Match) -> str:
    path = match.group(0)
    shared = os.path.commonpath([root, path])
    return path if shared == root and path != root else "OUTSIDE/" + os.path.relpath(path, shared)
  return _QUOTED_PATH.sub(relative, text)


def _eval_files(run_dir: str) -> list[str]:
  """Every evaluation's results.json and episodes.csv."""
  found = runs.find_results(run_dir)
  csvs = [os.path.join(os.path.dirname(p), "episodes.csv") for p in found]
  return found + [p for p in csvs if os.path.exists(p)]


def _copy_text(source: str, target: str, rewrite) -> None:
  os.makedirs(os.path.dirname(target), exist_ok=True)
  runs.write_atomically(target, rewrite(epath.Path(source).read_text()))
