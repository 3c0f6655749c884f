"""Prints a configured network's parameter breakdown (shapes only: nothing is compiled).

python -m scaled_ql.count_params --gin_file=pretrain_near_optimal.gin
python -m scaled_ql.count_params --model=resnet101      (the 40 training games)
"""

import gin
from absl import app, flags

from scaled_ql import cli, configurables, games, networks

_MODEL = flags.DEFINE_string("model", "resnet101", "Torso, without --gin_file.")


def main() -> None:
  gin_files, gin_bindings = cli.gin_files_and_bindings(required=False)
  if gin_files:
    configurables.parse_gin(gin_files, gin_bindings)
    arguments = configurables.train_arguments()
    # A model file alone (models/*.gin) binds only the network.
    method = arguments.get("method")
    network_config = method.network if method else gin.get_configurable(networks.NetworkConfig)()
    game_names = arguments.get("game_names", games.TRAIN_GAMES)
  else:
    network_config, game_names = networks.NetworkConfig(torso=_MODEL.value), games.TRAIN_GAMES
  num_actions = [games.num_actions(game) for game in game_names]
  counts = networks.count_params(network_config, num_actions)
  resolved = network_config.resolved()
  print(
    f"{resolved.torso}: widths={resolved.widths} F={resolved.spatial_embedding_features} "
    f"D={resolved.projection_dim} games={len(game_names)} actions={sum(num_actions)}"
  )
  for name, value in counts.items():
    print(f"  {name:18s} {value:>12,d}  ({value / 1e6:.2f}M)")


if __name__ == "__main__":
  app.run(lambda argv: cli.run_main(main))
