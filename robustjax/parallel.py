"""Device mesh and sharding helpers (jax.sharding; no pmap).

The suite is data-parallel: one mesh axis `data` spans every device of every
process; batches are sharded along it and parameters are replicated. The same
code runs on 1 CPU, 8 simulated CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`), a GPU host or a TPU
pod slice.
"""

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over all (or the given) devices, axis name `data`."""
  devices = np.asarray(devices if devices is not None else jax.devices())
  return Mesh(devices.reshape(-1), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "batch_size"):
  """Raises a clear error if the global batch does not split over devices."""
  n = mesh.devices.size
  if batch_size % n:
    raise ValueError(
        f"{what}={batch_size} does not divide by the {n} devices of the mesh; "
        f"use a multiple of {n} (e.g. {max(n, batch_size // n * n)}).")


def shard_batch(mesh: Mesh, *arrays):
  """Puts host arrays (this process's part of the global batch) on the mesh.

  Each array's leading axis is split over the `data` axis; with several
  processes, each passes its own slice and the result is one global array.
  """
  sharding = batch_sharded(mesh)
  out = tuple(jax.make_array_from_process_local_data(sharding, np.asarray(a))
              for a in arrays)
  return out if len(out) > 1 else out[0]


def shard_global_batch(mesh: Mesh, *arrays):
  """Like `shard_batch`, for a global batch that every process holds whole.

  Each process contributes only its contiguous slice (evaluation loops read
  the same batches on every process).
  """
  n, count = len(arrays[0]), jax.process_count()
  if n % count:
    raise ValueError(f"Batch of {n} does not split over {count} processes.")
  i, per = jax.process_index(), n // count
  return shard_batch(mesh, *(np.asarray(a)[i * per:(i + 1) * per]
                             for a in arrays))


def replicate(mesh: Mesh, tree):
  """Places a pytree replicated on every device of the mesh."""
  return jax.device_put(tree, replicated(mesh))


def is_main_process() -> bool:
  """Only process 0 writes metrics, results and checkpoint metadata."""
  return jax.process_index() == 0
