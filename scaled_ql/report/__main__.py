r"""Tables and plots from evaluated runs, laid out like the Scaled QL paper's.

    python -m scaled_ql.report --runs=RUN_DIR[,RUN_DIR...] --output=DIR [--protocol=dqn] \
        [--task_bootstrap] [--dqn_reference=FILE]

What the report holds, and how runs are read: `scaled_ql.report.build`.
"""

import json
import sys
from collections.abc import Sequence

from absl import app, flags

from scaled_ql.report import build

_RUNS = flags.DEFINE_string("runs", None, "Comma-separated run directories (or parents of runs).")
_OUTPUT = flags.DEFINE_string("output", None, "Output directory for tables and plots.")
_PROTOCOL = flags.DEFINE_enum(
  "protocol", "dqn", ["dqn", "mgdt", "custom"], "Which evaluations to use."
)
_REPS = flags.DEFINE_integer("reps", 2000, "Bootstrap replications.")
_SEED = flags.DEFINE_integer("seed", 0, "Bootstrap seed.")
_TASK_BOOTSTRAP = flags.DEFINE_bool("task_bootstrap", False, "Also resample games in the CIs.")
_DQN_REFERENCE = flags.DEFINE_string(
  "dqn_reference", "", "JSON {game: DQN score, 'source': ...} for fine-tuning."
)
flags.mark_flags_as_required(["runs", "output"])


def main(argv: Sequence[str]) -> None:
  del argv
  try:
    dqn_reference = None
    if _DQN_REFERENCE.value:
      with open(_DQN_REFERENCE.value) as f:
        dqn_reference = {k: float(v) for k, v in json.load(f).items() if k != "source"}
    left_out = build.build_report(
      _RUNS.value.split(","),
      _OUTPUT.value,
      protocol=_PROTOCOL.value,
      reps=_REPS.value,
      seed=_SEED.value,
      task_bootstrap=_TASK_BOOTSTRAP.value,
      dqn_reference=dqn_reference,
    )
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"Wrote the report to {_OUTPUT.value}/report.md")
  for note in left_out:
    print(f"left out: {note}")


if __name__ == "__main__":
  app.run(main)
