"""Input pipeline: deterministic, resumable batches and on-device augmentation.

Training order is a pure function of (seed, step): epoch `e` visits the split
in the permutation `default_rng([seed, e])`, batches drop the remainder. A run
resumed at step `s` therefore sees exactly the batches an uninterrupted run
would, with no iterator state to checkpoint. With several processes each
takes its contiguous slice of every global batch.

Splits stored larger than they are used (`Split.uncropped`, Office-31's
"resize to 256, crop 224") give random crops here, also a function of
(seed, step); evaluation uses their center crops (`Split.images`).

Augmentation runs inside the jitted train step (`augment`), keyed by the
step's rng, so it is reproducible too.
"""

import functools
import queue
import threading
from typing import Iterator, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import parallel
from robustjax.data.registry import Split

_CROP_STREAM = 1  # Separates the crop rng from the epoch permutations.


class TrainBatches:
  """Shuffled training batches as a function of the global step."""

  def __init__(self, split: Split, batch_size: int, seed: int,
               process_index: int = 0, process_count: int = 1):
    if batch_size > len(split):
      raise ValueError(f"batch_size {batch_size} is larger than the training "
                       f"split {split.name} ({len(split)} examples); lower "
                       "config.batch_size.")
    if batch_size % process_count:
      raise ValueError(f"batch_size {batch_size} must divide by the number of "
                       f"processes ({process_count}).")
    self.split = split
    self.batch_size = batch_size
    self.seed = seed
    self.steps_per_epoch = len(split) // batch_size
    per_process = batch_size // process_count
    self._slice = slice(process_index * per_process,
                        (process_index + 1) * per_process)
    self._perm_epoch, self._perm = None, None

  def indices(self, step: int) -> np.ndarray:
    """Example indices of this process's part of the batch at `step`."""
    epoch, pos = divmod(step, self.steps_per_epoch)
    if epoch != self._perm_epoch:
      rng = np.random.default_rng([self.seed, epoch])
      self._perm, self._perm_epoch = rng.permutation(len(self.split)), epoch
    batch = self._perm[pos * self.batch_size:(pos + 1) * self.batch_size]
    return batch[self._slice]

  def crop_offsets(self, step: int) -> np.ndarray:
    """(row, column) of the random crop of each of this process's examples."""
    margin = self.split.uncropped.shape[1] - self.split.images.shape[1]
    rng = np.random.default_rng([self.seed, step, _CROP_STREAM])
    offsets = rng.integers(0, margin + 1, (self.batch_size, 2))
    return offsets[self._slice]

  def batch(self, step: int) -> Tuple[np.ndarray, np.ndarray]:
    idx = self.indices(step)
    if self.split.uncropped is None:
      return self.split.images[idx], self.split.labels[idx]
    size = self.split.images.shape[1]
    images = np.stack([self.split.uncropped[i, r:r + size, c:c + size]
                       for i, (r, c) in zip(idx, self.crop_offsets(step))])
    return images, self.split.labels[idx]

  def iterate(self, start_step: int = 0) -> Iterator[Tuple[np.ndarray,
                                                           np.ndarray]]:
    step = start_step
    while True:
      yield self.batch(step)
      step += 1


# A split up to this size is copied to the devices once for stacked
# trainings, which then gather their batches there (indices cross from the
# host, not images).
DEVICE_SPLIT_MAX_BYTES = 1 << 30
# Host-gathered batches prepared ahead by a background thread on GPU/TPU
# (on CPU the thread would take cores from the step).
ACCELERATOR_PREFETCH = 2


@functools.lru_cache(maxsize=None)  # One per mesh: every group shares it.
def _gather_program(mesh):
  """(images, labels) on the devices, indices -> the batch, batch-sharded."""
  return jax.jit(lambda split, idx: (split[0][idx], split[1][idx]),
                 out_shardings=parallel.batch_sharded(mesh))


class MemberBatches:
  """The batch of step i of K trainings, on the mesh.

  One `TrainBatches` per distinct member seed; with several, step i's
  batches are stacked along axis 1 ([B, K, ...], one per member). Stacked
  trainings in one process on a split without random crops gather their
  batches on the devices from a copy of the split held there; otherwise
  batches are gathered on the host and copied. Both give the same arrays.
  """

  def __init__(self, batches: Sequence[TrainBatches], mesh, stacked: bool):
    self.batches, self.mesh = list(batches), mesh
    split = self.batches[0].split
    self.on_device = (stacked and split.uncropped is None and
                      jax.process_count() == 1 and
                      split.images.nbytes <= DEVICE_SPLIT_MAX_BYTES)
    if self.on_device:
      self._split = parallel.replicate(mesh, (split.images, split.labels))
      self._gather = _gather_program(mesh)

  def __call__(self, step: int):
    if self.on_device:
      idx = [b.indices(step) for b in self.batches]
      idx = idx[0] if len(idx) == 1 else np.stack(idx, 1)
      return self._gather(self._split, parallel.shard_batch(self.mesh, idx))
    if len(self.batches) == 1:
      return parallel.shard_batch(self.mesh, *self.batches[0].batch(step))
    parts = [b.batch(step) for b in self.batches]
    return parallel.shard_batch(self.mesh, np.stack([p[0] for p in parts], 1),
                                np.stack([p[1] for p in parts], 1))

  def iterate(self, start: int, prefetch: int = 0) -> Iterator:
    """The batches of steps `start`, `start + 1`, ...

    With `prefetch` > 0 a background thread prepares that many ahead (the
    host's gathering and random crops and the copy to the devices overlap
    the devices' step); the batches are the same.
    """
    if prefetch <= 0 or self.on_device:
      step = start
      while True:
        yield self(step)
        step += 1
    ready, stop = queue.Queue(maxsize=prefetch), threading.Event()

    def work():
      step = start
      while not stop.is_set():
        try:
          item = self(step)
        except Exception as e:  # pylint: disable=broad-except
          item = e  # Raised in the consumer.
        while not stop.is_set():
          try:
            ready.put(item, timeout=0.1)
            break
          except queue.Full:
            pass
        if isinstance(item, Exception):
          return
        step += 1

    threading.Thread(target=work, daemon=True,
                     name="robustjax-batches").start()
    try:
      while True:
        item = ready.get()
        if isinstance(item, Exception):
          raise item
        yield item
    finally:  # Also when the consumer stops early (the generator closes).
      stop.set()


def eval_batches(split: Split, batch_size: int, process_index: int = 0,
                 process_count: int = 1):
  """Yields (images, labels, mask) in order; the last batch is zero-padded.

  Padding keeps every batch the same shape (one compilation); `mask` is 1 for
  real examples. With several processes each gets every `process_count`-th
  batch.
  """
  n = len(split)
  for b, start in enumerate(range(0, n, batch_size)):
    if b % process_count != process_index:
      continue
    images = split.images[start:start + batch_size]
    labels = split.labels[start:start + batch_size]
    mask = np.ones(len(labels), np.float32)
    pad = batch_size - len(labels)
    if pad:
      images = np.concatenate([images, np.zeros((pad,) + images.shape[1:],
                                                images.dtype)])
      labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
      mask = np.concatenate([mask, np.zeros(pad, np.float32)])
    yield images, labels, mask


def to_float(images) -> jax.Array:
  """uint8 [0, 255] -> float32 [0, 1] (floats pass through)."""
  images = jnp.asarray(images)
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def augment(images: jax.Array, key: jax.Array, crop_padding: int = 0,
            flip: bool = False) -> jax.Array:
  """Random crop (after reflect-free zero padding) and horizontal flip.

  Args:
    images: float [N, H, W, C].
    key: PRNG key.
    crop_padding: pad each side by this many pixels, then crop back to H x W
      at a random offset per image (0 disables).
    flip: flip each image left-right with probability 1/2.

  Returns:
    Augmented images, same shape.
  """
  n, h, w, _ = images.shape
  k_crop, k_flip = jax.random.split(key)
  if crop_padding:
    p = crop_padding
    padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
    offsets = jax.random.randint(k_crop, (n, 2), 0, 2 * p + 1)
    images = jax.vmap(lambda im, o: jax.lax.dynamic_slice(
        im, (o[0], o[1], 0), (h, w, im.shape[-1])))(padded, offsets)
  if flip:
    do_flip = jax.random.bernoulli(k_flip, 0.5, (n, 1, 1, 1))
    images = jnp.where(do_flip, images[:, :, ::-1], images)
  return images
