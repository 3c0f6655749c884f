r"""Multi-game offline pretraining: `python -m scaled_ql.pretrain`.

  python -m scaled_ql.pretrain --workdir=/tmp/run \
      --gin_file=pretrain_near_optimal.gin \
      --gin_bindings="data.ReplayDataset.shard_dir = '/data/dqn_replay_shards'"

The same command in the same workdir resumes from the last checkpoint.
"""

from absl import app, logging

from scaled_ql import cli, configurables, trainer


def main() -> None:
  workdir = cli.require_workdir()
  configurables.parse_gin(*cli.gin_files_and_bindings())
  cli.initialize_distributed()
  final_metrics = trainer.train(workdir)
  shown = {
    k: round(v, 4) for k, v in final_metrics.items() if "/" not in k or k.startswith("eval/")
  }
  logging.info(
    "Done%s. Checkpoints, metrics.jsonl and TensorBoard logs are in %s.",
    f": {shown}" if shown else "",
    workdir,
  )


if __name__ == "__main__":
  app.run(lambda argv: cli.run_main(main))
