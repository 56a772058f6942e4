"""Tests for robustjax.data.pipeline: batches, eval padding, augmentation."""

import itertools
import threading
import time
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from robustjax import parallel
from robustjax.data import pipeline
from robustjax.data.registry import Split


def _split(n, size=2):
  """Example i is an image filled with i % 256; its label is i."""
  images = np.broadcast_to((np.arange(n) % 256).astype(np.uint8)[:, None,
                                                                None, None],
                           (n, size, size, 1)).copy()
  return Split(images=images, labels=np.arange(n, dtype=np.int32),
               name="toy/toy/train")


def _cropped_split(n, stored=10, size=6):
  """Distinct random pixels, center crops in `images` (as the registry)."""
  uncropped = np.random.default_rng(0).integers(
      0, 256, (n, stored, stored, 3)).astype(np.uint8)
  o = (stored - size) // 2
  return Split(images=uncropped[:, o:o + size, o:o + size],
               labels=np.arange(n, dtype=np.int32), name="toy/toy/train",
               uncropped=uncropped)


class TrainBatchesTest(parameterized.TestCase):

  def test_random_crops_of_uncropped_splits(self):
    split = _cropped_split(40)
    batches = pipeline.TrainBatches(split, 8, seed=5)
    offsets = []
    for step in range(30):
      images, labels = batches.batch(step)
      self.assertEqual(images.shape, (8, 6, 6, 3))
      idx, off = batches.indices(step), batches.crop_offsets(step)
      np.testing.assert_array_equal(labels, idx)
      for image, i, (r, c) in zip(images, idx, off):
        np.testing.assert_array_equal(image,
                                      split.uncropped[i, r:r + 6, c:c + 6])
      offsets.append(off)
    offsets = np.concatenate(offsets)
    # Every offset 0..4 occurs, on both axes, and nothing else.
    for axis in (0, 1):
      self.assertEqual(set(offsets[:, axis].tolist()), set(range(5)))
    # A pure function of (seed, step); the seed matters.
    again = pipeline.TrainBatches(split, 8, seed=5)
    np.testing.assert_array_equal(again.batch(17)[0], batches.batch(17)[0])
    other = pipeline.TrainBatches(split, 8, seed=6)
    self.assertFalse(np.array_equal(other.crop_offsets(17),
                                    batches.crop_offsets(17)))

  def test_crops_split_across_processes(self):
    split = _cropped_split(40)
    whole = pipeline.TrainBatches(split, 8, seed=2).batch(9)[0]
    parts = [pipeline.TrainBatches(split, 8, seed=2, process_index=p,
                                   process_count=2).batch(9)[0]
             for p in range(2)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)

  def test_pure_function_of_seed_and_step(self):
    a = pipeline.TrainBatches(_split(100), 8, seed=3)
    b = pipeline.TrainBatches(_split(100), 8, seed=3)
    # Random access in any order gives the same batches.
    steps = [37, 3, 0, 12, 37, 24, 11, 100]
    first = {s: a.indices(s).copy() for s in steps}
    for s in reversed(steps):
      np.testing.assert_array_equal(b.indices(s), first[s])
    other = pipeline.TrainBatches(_split(100), 8, seed=4)
    self.assertFalse(np.array_equal(other.indices(0), first[0]))

  def test_batch_content_matches_indices(self):
    batches = pipeline.TrainBatches(_split(50, size=3), 5, seed=0)
    images, labels = batches.batch(7)
    idx = batches.indices(7)
    np.testing.assert_array_equal(labels, idx)
    np.testing.assert_array_equal(images[:, 0, 0, 0], idx)
    self.assertEqual(images.shape, (5, 3, 3, 1))
    self.assertEqual(images.dtype, np.uint8)

  @parameterized.parameters((100, 10), (103, 10), (64, 64))
  def test_epochs_are_permutations(self, n, batch_size):
    batches = pipeline.TrainBatches(_split(n), batch_size, seed=1)
    spe = batches.steps_per_epoch
    self.assertEqual(spe, n // batch_size)  # The remainder is dropped.
    epochs = []
    for epoch in range(3):
      seen = np.concatenate([batches.indices(epoch * spe + i)
                             for i in range(spe)])
      self.assertLen(seen, spe * batch_size)
      self.assertLen(set(seen.tolist()), len(seen))  # No repeats.
      self.assertTrue(set(seen.tolist()) <= set(range(n)))
      if n % batch_size == 0:
        np.testing.assert_array_equal(np.sort(seen), np.arange(n))
      epochs.append(seen)
    if n > batch_size:  # Each epoch is shuffled anew.
      self.assertFalse(np.array_equal(epochs[0], epochs[1]))

  def test_resume_gives_the_same_batches(self):
    full = pipeline.TrainBatches(_split(40), 8, seed=0)
    uninterrupted = list(itertools.islice(full.iterate(), 23))
    resumed = pipeline.TrainBatches(_split(40), 8, seed=0)
    tail = list(itertools.islice(resumed.iterate(start_step=17), 6))
    for (x, y), (rx, ry) in zip(uninterrupted[17:], tail):
      np.testing.assert_array_equal(x, rx)
      np.testing.assert_array_equal(y, ry)

  @parameterized.parameters(2, 4)
  def test_process_slices_partition_the_global_batch(self, process_count):
    split = _split(96)
    whole = pipeline.TrainBatches(split, 16, seed=5)
    parts = [pipeline.TrainBatches(split, 16, seed=5, process_index=p,
                                   process_count=process_count)
             for p in range(process_count)]
    for step in (0, 1, 5, 6, 13):
      pieces = [p.indices(step) for p in parts]
      for piece in pieces:
        self.assertLen(piece, 16 // process_count)
      np.testing.assert_array_equal(np.concatenate(pieces),
                                    whole.indices(step))

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, "batch_size 64 is larger than the "
                                "training split toy/toy/train \\(10 "
                                "examples\\).*config.batch_size"):
      pipeline.TrainBatches(_split(10), 64, seed=0)
    with self.assertRaisesRegex(ValueError, "must divide by the number of "
                                "processes \\(3\\)"):
      pipeline.TrainBatches(_split(100), 16, seed=0, process_count=3)


class MemberBatchesTest(parameterized.TestCase):

  @parameterized.parameters(1, 3)
  def test_device_gathered_batches_equal_host_batches(self, members):
    mesh = parallel.train_mesh()
    batches = [pipeline.TrainBatches(_split(40), 8, seed)
               for seed in range(members)]
    device = pipeline.MemberBatches(batches, mesh, stacked=True)
    self.assertTrue(device.on_device)
    with mock.patch.object(pipeline, "DEVICE_SPLIT_MAX_BYTES", 0):
      host = pipeline.MemberBatches(batches, mesh, stacked=True)
    self.assertFalse(host.on_device)
    for step in (0, 4, 11):  # Across epochs (5 steps each).
      for a, b in zip(device(step), host(step)):
        self.assertEqual(a.sharding, b.sharding)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
      if members > 1:
        self.assertEqual(device(step)[0].shape, (8, members, 2, 2, 1))

  def test_prefetched_batches_are_the_same_batches(self):
    mesh = parallel.train_mesh()
    batches = [pipeline.TrainBatches(_cropped_split(40), 8, seed)
               for seed in range(2)]
    direct = pipeline.MemberBatches(batches, mesh, stacked=True)
    self.assertFalse(direct.on_device)  # Random crops: host batches.
    ahead = direct.iterate(3, prefetch=2)
    for step in range(3, 15):
      for a, b in zip(next(ahead), direct(step)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    ahead.close()  # Stops the thread.
    for _ in range(50):
      if not any(t.name == "robustjax-batches" for t in threading.enumerate()):
        break
      time.sleep(0.05)
    self.assertFalse(any(t.name == "robustjax-batches"
                         for t in threading.enumerate()))

  def test_an_error_in_the_prefetch_thread_reaches_the_consumer(self):
    batches = pipeline.MemberBatches(
        [pipeline.TrainBatches(_split(40), 8, 0)], parallel.train_mesh(),
        stacked=False)
    with mock.patch.object(batches.batches[0], "batch",
                           side_effect=OSError("disk")):
      with self.assertRaisesRegex(OSError, "disk"):
        next(batches.iterate(0, prefetch=2))

  def test_single_trainings_and_random_crops_gather_on_the_host(self):
    mesh = parallel.train_mesh()
    single = pipeline.MemberBatches([pipeline.TrainBatches(_split(40), 8, 0)],
                                    mesh, stacked=False)
    self.assertFalse(single.on_device)
    crops = pipeline.MemberBatches(
        [pipeline.TrainBatches(_cropped_split(40), 8, 0)], mesh, stacked=True)
    self.assertFalse(crops.on_device)


class EvalBatchesTest(parameterized.TestCase):

  def test_padding_and_mask(self):
    split = _split(10, size=3)
    batches = list(pipeline.eval_batches(split, 4))
    self.assertLen(batches, 3)
    for images, labels, mask in batches:
      self.assertEqual(images.shape, (4, 3, 3, 1))
      self.assertEqual(images.dtype, np.uint8)
      self.assertEqual(labels.shape, (4,))
      self.assertEqual(mask.dtype, np.float32)
    images, labels, mask = batches[-1]
    np.testing.assert_array_equal(mask, [1, 1, 0, 0])
    np.testing.assert_array_equal(labels[:2], [8, 9])
    np.testing.assert_array_equal(images[2:], 0)
    np.testing.assert_array_equal(labels[2:], 0)
    real = np.concatenate([lb[m > 0] for _, lb, m in batches])
    np.testing.assert_array_equal(real, split.labels)  # In order.

  def test_exact_multiple_has_no_padding(self):
    batches = list(pipeline.eval_batches(_split(8), 4))
    self.assertLen(batches, 2)
    self.assertTrue(all(m.all() for _, _, m in batches))

  def test_processes_share_the_batches(self):
    split = _split(23)
    parts = [list(pipeline.eval_batches(split, 4, p, 3)) for p in range(3)]
    self.assertEqual([len(p) for p in parts], [2, 2, 2])
    labels = np.concatenate([lb[m > 0] for part in parts
                             for _, lb, m in part])
    np.testing.assert_array_equal(np.sort(labels), split.labels)


class AugmentTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.images = jax.random.uniform(jax.random.PRNGKey(0), (16, 8, 8, 3))
    self.key = jax.random.PRNGKey(42)

  def test_to_float(self):
    x = pipeline.to_float(np.array([0, 51, 255], np.uint8))
    self.assertEqual(x.dtype, jnp.float32)
    np.testing.assert_allclose(x, [0.0, 0.2, 1.0])
    y = pipeline.to_float(np.array([0.5], np.float64))
    self.assertEqual(y.dtype, jnp.float32)
    np.testing.assert_allclose(y, [0.5])

  def test_disabled_is_identity(self):
    out = pipeline.augment(self.images, self.key)
    np.testing.assert_array_equal(out, self.images)

  @parameterized.parameters((4, True), (0, True), (2, False))
  def test_shape_and_keying(self, crop_padding, flip):
    aug = jax.jit(pipeline.augment, static_argnums=(2, 3))
    out = aug(self.images, self.key, crop_padding, flip)
    self.assertEqual(out.shape, self.images.shape)
    self.assertEqual(out.dtype, self.images.dtype)
    np.testing.assert_array_equal(
        out, aug(self.images, self.key, crop_padding, flip))
    other = aug(self.images, jax.random.PRNGKey(7), crop_padding, flip)
    self.assertFalse(np.array_equal(out, other))
    self.assertFalse(np.array_equal(out, self.images))

  def test_flip_mirrors_or_keeps_each_image(self):
    out = np.asarray(pipeline.augment(self.images, self.key, flip=True))
    x = np.asarray(self.images)
    flipped = [np.array_equal(o, im[:, ::-1]) for o, im in zip(out, x)]
    kept = [np.array_equal(o, im) for o, im in zip(out, x)]
    self.assertTrue(all(f or k for f, k in zip(flipped, kept)))
    self.assertTrue(any(flipped) and any(kept))

  def test_crop_is_a_shifted_window(self):
    p = 2
    out = np.asarray(pipeline.augment(self.images, self.key, crop_padding=p))
    padded = np.pad(np.asarray(self.images), ((0, 0), (p, p), (p, p), (0, 0)))
    offsets = set()
    for o, im in zip(out, padded):
      matches = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                 if np.array_equal(o, im[dy:dy + 8, dx:dx + 8])]
      self.assertNotEmpty(matches)
      offsets.add(matches[0])
    self.assertGreater(len(offsets), 3)  # Offsets vary between images.


if __name__ == "__main__":
  absltest.main()
