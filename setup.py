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
  # Lower bounds are the versions the tests and benchmarks ran with.
  install_requires=[
    "absl-py>=2.5",
    "ale-py>=0.12.1",
    "chex>=0.1.92",
    "dm-haiku>=0.0.17",
    "etils[epath]>=1.15",  # One path API for run directories and raw data, local or gs://.
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
    "scipy>=1.17",  # report/significance.py: t distributions for the verdicts' p-values.
    # rlax's distrax backend needs TensorFlow Probability from tfp-nightly with jax 0.10; the
    # stable tensorflow-probability 0.25 breaks it (so dopamine-rl, which requires that, is
    # installed without its dependencies: launch/setup.sh).
    "rlax>=0.1.9",
    "tfp-nightly>=0.26.0.dev20261027",
    # TensorFlow Probability checks for TF-Keras whenever TensorFlow is installed too (ours is,
    # for the data layer); dopamine-rl's requirements used to bring it in.
    "tf-keras>=2.21",
    "tensorboard>=2.21",
    "tensorflow>=2.21",
    "tfds-nightly",
    "tqdm>=4.70",
  ],
  extras_require={
    # dopamine-rl's replay-buffer writer and sampler, the DQN Replay format reference in tests,
    # is installed by launch/setup.sh with --no-deps (its own requirements would replace
    # tfp-nightly with tensorflow-probability 0.25, and add gym 0.25, tf-slim and pygame).
    "test": ["pytest>=9.2", "fsspec>=2026.9"],  # fsspec: an in-memory stand-in for a bucket.
    # orbax imports google-cloud-storage for gs:// checkpoint directories (not exercised here:
    # no GCS access on the development machines).
    "tpu": ["jax[tpu]", "google-cloud-storage>=3.17"],
  },
)
