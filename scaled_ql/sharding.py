"""Device mesh and NamedSharding helpers: batch split on axis 0, parameters replicated or FSDP.

One mesh axis, `data`. Data parallelism splits the global batch over it; the FSDP option
additionally splits each large parameter (and its Adam moments) over the same axis, so
XLA all-gathers weights where they are used and reduce-scatters their gradients
(ZeRO-3 style), for models whose optimizer state does not fit on one device.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"

# Parameters smaller than this stay replicated under FSDP: splitting them saves nothing.
_FSDP_MIN_SIZE = 2**16


def make_mesh(num_devices: int | None = None) -> Mesh:
  """A 1-D mesh over the first `num_devices` global devices (all by default)."""
  devices = jax.devices()
  if num_devices is not None:
    if not 0 < num_devices <= len(devices):
      raise ValueError(f"num_devices={num_devices} but {len(devices)} devices are available.")
    devices = devices[:num_devices]
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the mesh."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def _leaf_sharding(leaf, mesh: Mesh, fsdp: bool) -> NamedSharding:
  """Replicated, or (FSDP) split along the largest axis the mesh size divides."""
  shape = getattr(leaf, "shape", ())
  if not fsdp or int(np.prod(shape)) < _FSDP_MIN_SIZE:
    return replicated(mesh)
  size = mesh.shape[DATA_AXIS]
  for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
    if shape[axis] % size == 0:
      spec = [None] * len(shape)
      spec[axis] = DATA_AXIS
      return NamedSharding(mesh, PartitionSpec(*spec))
  return replicated(mesh)


def state_sharding(state, mesh: Mesh, fsdp: bool = False):
  """A pytree of NamedShardings matching `state` (arrays or ShapeDtypeStructs)."""
  return jax.tree.map(lambda leaf: _leaf_sharding(leaf, mesh, fsdp), state)


def replicated_shapes(shapes, mesh: Mesh, fsdp: bool = False):
  """ShapeDtypeStructs (e.g. from jax.eval_shape of the init) carrying their mesh sharding.

  The abstract target for restoring a checkpoint straight onto the mesh.
  """
  shardings = state_sharding(shapes, mesh, fsdp)
  return jax.tree.map(
    lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
    shapes,
    shardings,
  )


def put_batch(batch, mesh: Mesh):
  """Assembles each process's local batch into one global batch split on axis 0.

  Args:
    batch: a pytree (e.g. types.Batch) of host numpy arrays with leading axis
      local_batch_size, which the number of this process's mesh devices must divide.
    mesh: the mesh.

  Returns:
    The same pytree of global jax.Arrays, leading axis global_batch_size.
  """
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
