r"""Multi-game offline pretraining: `python -m scaled_ql.pretrain`.

  python -m scaled_ql.pretrain --workdir=/tmp/run \
      --gin_file=pretrain_near_optimal.gin \
      --gin_bindings="data.ReplayDataset.shard_dir = '/data/dqn_replay_shards'"

The same command in the same workdir resumes from the last checkpoint.
"""

from absl import app, logging

from scaled_ql import config, trainer


def main() -> None:
  workdir = config.require_workdir()
  if not config.flags.FLAGS.gin_file:
    raise config.UserError(
      "give at least one --gin_file (e.g. local.gin, debug.gin, pretrain_near_optimal.gin)"
    )
  config.parse_gin(config.flags.FLAGS.gin_file, config.flags.FLAGS.gin_bindings)
  config.initialize_distributed()
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
  app.run(lambda argv: config.run_main(main))
