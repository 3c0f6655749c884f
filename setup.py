"""scaled_ql: Scaled Q-Learning (Kumar et al., ICLR 2023) on DQN Replay Atari data."""

import setuptools

setuptools.setup(
  name="scaled_ql",
  version="0.1.0",
  description=(
    "Offline multi-game Q-learning at scale: ResNet + spatial embedding + "
    "feature normalization, per-game C51 heads, C51 + CQL on DQN Replay."
  ),
  python_requires=">=3.11",
  packages=setuptools.find_packages(include=["scaled_ql", "scaled_ql.*", "data_prep"]),
  package_data={"scaled_ql": ["reference_scores.json"]},
  install_requires=[
    "absl-py>=2.1",
    "ale-py>=0.10",
    "chex>=0.1.90",
    "dm-haiku>=0.0.14",
    "gin-config>=0.5.0",
    "gymnasium[atari]>=1.0",
    "importlib_resources>=6",  # tfds-nightly's builders need it and do not declare it.
    "jax>=0.7",
    "matplotlib>=3.9",
    "numpy>=1.26",
    "opencv-python-headless>=4.10",
    "optax>=0.2.4",
    "orbax-checkpoint>=0.11",
    "pandas<3",
    "rliable>=1.2.0",
    "tensorboard>=2.18",
    "tensorflow>=2.18",
    "tfds-nightly",
    "tqdm>=4.66",
  ],
  extras_require={
    "test": ["pytest>=8", "dopamine-rl==4.1.2"],
    "tpu": ["jax[tpu]"],
  },
)
