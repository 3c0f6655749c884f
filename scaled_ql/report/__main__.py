r"""Tables and plots from evaluated runs, laid out like the Scaled QL paper's.

    python -m scaled_ql.report --runs=RUN_DIR[,RUN_DIR...] --output=DIR [--protocol=dqn] \
        [--task_bootstrap] [--dqn_reference=FILE]

What the report holds, and how runs are read: `scaled_ql.report.build`.
"""

import json

from absl import app, flags
from etils import epath

from scaled_ql import cli
from scaled_ql.report import build

_RUNS = flags.DEFINE_string(
  "runs", None, "Comma-separated run directories (or parents of runs); local or gs:// URIs."
)
_OUTPUT = flags.DEFINE_string("output", None, "Local output directory for tables and plots.")
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


def main() -> None:
  dqn_reference = None
  if _DQN_REFERENCE.value:
    reference = json.loads(epath.Path(_DQN_REFERENCE.value).read_text())
    dqn_reference = {k: float(v) for k, v in reference.items() if k != "source"}
  left_out = build.build_report(
    _RUNS.value.split(","),
    _OUTPUT.value,
    protocol=_PROTOCOL.value,
    reps=_REPS.value,
    seed=_SEED.value,
    task_bootstrap=_TASK_BOOTSTRAP.value,
    dqn_reference=dqn_reference,
  )
  print(f"Wrote the report to {_OUTPUT.value}/report.md")
  for note in left_out:
    print(f"left out: {note}")


if __name__ == "__main__":
  app.run(lambda argv: cli.run_main(main))
