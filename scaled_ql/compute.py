"""How the networks compute: in which precision, and whether blocks are rematerialised.

Neither changes the parameters (always float32, with the same names and initial values), so a
run may change both when it resumes.

    train.precision = "float32"    today's numerics
                    = "bfloat16"   the torso, spatial embedding and projection of the Q-network
                                   and the DT's attention and MLP compute in bfloat16, forward
                                   and backward; parameters, optimizer moments, target and EMA
                                   parameters stay float32
                    = "auto"       bfloat16 on TPU and GPU, float32 on CPU (paper-scale gin files)
    train.remat = True             recompute each residual / transformer block in the backward
                                   pass instead of keeping its activations (memory for FLOPs)

The mechanism (`params_in`) is haiku's custom creator and getter, entered at one site of each
network around the part that computes in bfloat16: parameters created there are float32 (haiku's
Conv2D and Linear would create them in their input's dtype) and are cast to bfloat16 when read;
the network casts its activations once where the region starts. Everything that the losses see
stays float32 because it is computed outside the regions: normalization statistics (GroupNorm
upcasts its own; the DT's LayerNorms read the float32 residual stream), the feature norm, the
heads and their logits, softmax, Q = sum(p * z), the losses. Why not `hk.mixed_precision`: its
policies are keyed by module class, and the DT uses `hk.Linear` both in its blocks (bfloat16) and
for its read-outs (float32); wrapping one or the other in a module of its own would rename
parameters that existing checkpoints hold. See docs/accelerators.md.
"""

import contextlib
from typing import NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

PRECISIONS = ("float32", "bfloat16", "auto")


class ComputeConfig(NamedTuple):
  """Plain values a network is built with (the trainer resolves them from gin).

  Attributes:
    dtype: the compute dtype of the network's bulk (float32 or bfloat16).
    remat: rematerialise each residual block / transformer block.
  """

  dtype: np.dtype = np.dtype(jnp.float32)
  remat: bool = False


FLOAT32 = ComputeConfig()  # Today's numerics: the default of every builder.


def resolve(precision: str, remat: bool = False, platform: str | None = None) -> ComputeConfig:
  """The ComputeConfig of `train.precision` on `platform` (default: JAX's default backend).

  Raises:
    ValueError: `precision` is not one of PRECISIONS (checked before anything is computed).
  """
  if precision not in PRECISIONS:
    raise ValueError(
      f"train.precision = {precision!r} is not one of {', '.join(map(repr, PRECISIONS))}."
    )
  if precision == "auto":
    accelerator = (platform or jax.default_backend()) in ("tpu", "gpu", "cuda", "rocm")
    precision = "bfloat16" if accelerator else "float32"
  return ComputeConfig(np.dtype(jnp.dtype(precision)), bool(remat))


@contextlib.contextmanager
def params_in(dtype):
  """Inside (haiku code): parameters are created float32 and read as `dtype`.

  Use it around the part of a network that computes in `dtype`, whose input the network casts
  to `dtype`; gradients reach the float32 parameters through the cast. A no-op for float32.
  """
  if np.dtype(dtype) == np.float32:
    yield
    return

  def create(next_creator, shape, param_dtype, init, context):
    del param_dtype, context
    return next_creator(shape, jnp.float32, init)

  def read(next_getter, value, context):
    del context
    return next_getter(value.astype(dtype) if jnp.issubdtype(value.dtype, jnp.floating) else value)

  with hk.custom_creator(create), hk.custom_getter(read):
    yield


def maybe_remat(fn, remat: bool):
  """`fn` (a haiku function or module) rematerialised in the backward pass when `remat`."""
  return hk.remat(fn) if remat else fn
