"""Device mesh and sharding helpers (jax.sharding; no pmap).

The suite is data-parallel: one mesh axis `data` spans every device of every
process; batches are sharded along it and parameters are replicated. The same
code runs on 1 CPU, 8 simulated CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`), a GPU host or a TPU
pod slice.

Evaluation and attacks (no collectives: every example is independent) run
on every device, attacks under `per_example` (`jax.shard_map`); training
runs on `train_mesh()`, which a CPU process set up by
`cpu_setup.configure_host_devices` (one XLA CPU device per core) limits to
its first device by default, so that a train step needs no all-reduce
(XLA:CPU's in-process collectives are the fragile part of such a run).
"""

from typing import Optional, Sequence

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

DATA_AXIS = "data"

# CPU devices `train_mesh()` uses in a one-process CPU run; None: all. Set
# through `limit_cpu_train_devices` by `cpu_setup.configure_host_devices`
# (only when it created the devices itself).
_cpu_train_devices: Optional[int] = None


def limit_cpu_train_devices(count: Optional[int]) -> None:
  """Makes `train_mesh()` use the first `count` CPU devices (None: all).

  Applies to a one-process run on the CPU only; `cpu_setup` calls it when
  it creates the process's CPU devices.
  """
  global _cpu_train_devices
  _cpu_train_devices = count


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over all (or the given) devices, axis name `data`."""
  devices = np.asarray(devices if devices is not None else jax.devices())
  return Mesh(devices.reshape(-1), (DATA_AXIS,))


def train_mesh() -> Mesh:
  """The trainer's mesh: every device, or those `limit_cpu_train_devices` set.

  In a one-process CPU run set up by `cpu_setup.configure_host_devices`
  (the launchers), the first `train_devices` CPU devices (default one), so
  a train step needs no all-reduce; everywhere else (GPU, TPU, several
  processes, a device count the user chose) the same as `make_mesh()`.
  """
  devices = jax.devices()
  if (_cpu_train_devices is not None and jax.process_count() == 1
      and devices[0].platform == "cpu"):
    devices = devices[:_cpu_train_devices]
  return make_mesh(devices)


def per_example(fn, mesh: Mesh, num_replicated: int, out_axis=0,
                batch_axes: Optional[Sequence[int]] = None):
  """`fn` run on each device's examples of a batch, with no communication.

  For a computation that is independent per example (attacks, inference):
  `fn(*replicated, *batched)` where the first `num_replicated` arguments
  (pytrees) are replicated and the rest are sharded along their example
  axis (`batch_axes`, one per batched argument; default: the leading
  axis); the output's example axis `out_axis` (an int, or a tuple with one
  per output) is sharded the same way. Each device runs `fn` on its slice,
  exactly as a one-device program at the per-device batch would, so XLA's
  sharding propagation cannot turn a batch-merging reshape (e.g. a vmap
  folded into a convolution's batch) into all-gathers.
  """
  spec = lambda axis: P(*([None] * axis), DATA_AXIS)
  out_specs = (tuple(map(spec, out_axis)) if isinstance(out_axis, tuple)
               else spec(out_axis))

  def wrapped(*args):
    axes = batch_axes or (0,) * (len(args) - num_replicated)
    specs = (P(),) * num_replicated + tuple(map(spec, axes))
    return jax.shard_map(fn, mesh=mesh, in_specs=specs,
                         out_specs=out_specs)(*args)
  return wrapped


def barrier(name: str) -> None:
  """Waits until every process gets here (no-op in a one-process run)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


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
