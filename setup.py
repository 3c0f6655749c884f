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
  # Lower bounds are the versions the tests and benchmarks ran with. rlax is not a
  # dependency: rlax 0.1.9 fails to import with jax 0.10 (its distrax/TFP backend).
  install_requires=[
    "absl-py>=2.5",
    "ale-py>=0.12.1",
    "chex>=0.1.92",
    "dm-haiku>=0.0.17",
    "gin-config>=0.5.0",
    "gymnasium[atari]>=1.4",
    "importlib_resources>=7.1",  # tfds-nightly's builders need it and do not declare it.
    "jax>=0.10.2",
    "matplotlib>=3.11",
    "numpy>=2.4",
    "opencv-python-headless>=5.0",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.8",
    "pandas<3",  # rliable 1.2.0 fails to import with pandas 3.
    "rliable>=1.2.0",
    "tensorboard>=2.21",
    "tensorflow>=2.21",
    "tfds-nightly",
    "tqdm>=4.70",
  ],
  extras_require={
    # dopamine-rl's replay-buffer writer and sampler are the DQN Replay format reference.
    "test": ["pytest>=9.2", "dopamine-rl==4.1.2"],
    "tpu": ["jax[tpu]"],
  },
)
