"""Office-31 through the registry, on a generated folder of JPEGs.

The real archive cannot be downloaded here; the tests write a tiny folder in
its standard layout (`domain_adaptation_images/<domain>/images/<class>/`)
with Pillow: two classes, a few images each, of different sizes. `back_pack`
images are reddish and `bike` images bluish, so labels can be checked
against the pixels after the tfds build.
"""

import os
import tempfile

from absl.testing import absltest
import numpy as np
from PIL import Image

from configs import office31_resnet
from robustjax import train
from robustjax.data import office31
from robustjax.data import pipeline
from robustjax.data import registry

# domain -> {class: number of images}.
LAYOUT = {
    "amazon": {"back_pack": 5, "bike": 5},
    "dslr": {"back_pack": 3, "bike": 2},
    "webcam": {"back_pack": 2, "bike": 4},
}
SIZES = ((40, 30), (64, 48), (20, 52), (33, 33), (100, 75))
COLOURS = {"back_pack": (200, 40, 30), "bike": (30, 60, 210)}


def write_office31(root, layout=None, nested=True, seed=0):
  """Writes JPEGs in the Office-31 layout under `root`; returns `root`."""
  rng = np.random.default_rng(seed)
  for domain, classes in (layout or LAYOUT).items():
    base = (os.path.join(root, "domain_adaptation_images", domain, "images")
            if nested else os.path.join(root, domain, "images"))
    for name, count in classes.items():
      folder = os.path.join(base, name)
      os.makedirs(folder)
      for i in range(count):
        w, h = SIZES[i % len(SIZES)]
        noise = rng.integers(-30, 30, (h, w, 3))
        pixels = np.clip(np.asarray(COLOURS[name]) + noise, 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(
            os.path.join(folder, f"frame_{i + 1:04d}.jpg"), quality=95)
      with open(os.path.join(folder, "Thumbs.db"), "w") as f:
        f.write("not an image")  # Skipped by the builder.
  return root


def _rows(split):
  return sorted(zip((im.tobytes() for im in split.images),
                    split.labels.tolist()))


class Office31Test(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._tmp = tempfile.TemporaryDirectory()
    cls.manual_dir = write_office31(os.path.join(cls._tmp.name, "manual"))
    cls.data_dir = os.path.join(cls._tmp.name, "tfds")

  @classmethod
  def tearDownClass(cls):
    cls._tmp.cleanup()
    super().tearDownClass()

  def load(self, domain, split, size=32, **kw):
    kw.setdefault("data_dir", self.data_dir)
    kw.setdefault("manual_dir", self.manual_dir)
    kw.setdefault("allow_partial", True)  # A few images, not 4,110.
    return registry.load_split("office31", domain, split, image_size=size,
                               **kw)

  def test_full_split(self):
    back_pack = office31.CLASSES.index("back_pack")
    bike = office31.CLASSES.index("bike")
    for domain, classes in LAYOUT.items():
      s = self.load(domain, "full")
      self.assertEqual(s.images.shape, (sum(classes.values()), 32, 32, 3))
      self.assertEqual(s.images.dtype, np.uint8)
      self.assertEqual(s.name, f"office31/{domain}/full")
      counts = np.bincount(s.labels, minlength=31)
      self.assertEqual(counts[back_pack], classes["back_pack"])
      self.assertEqual(counts[bike], classes["bike"])
      self.assertEqual(counts.sum(), sum(classes.values()))
      # Labels belong to their pixels: back packs red, bikes blue.
      mean = s.images.mean((1, 2))
      red = s.labels == back_pack
      self.assertTrue(np.all(mean[red, 0] > mean[red, 2] + 100))
      self.assertTrue(np.all(mean[~red, 2] > mean[~red, 0] + 100))

  def test_resize_256_crop_224(self):
    # At 224 px: the prepared 256x256 images, center-cropped for evaluation,
    # random 224x224 crops for training.
    s = self.load("amazon", "full", size=224)
    spec = registry.get_spec("office31")
    source = registry.custom_builder(spec, "amazon",
                                     self.data_dir).as_data_source("train")
    stored = np.stack([source[i]["image"] for i in range(len(source))])
    self.assertEqual(stored.shape, (10, 256, 256, 3))
    np.testing.assert_array_equal(s.uncropped, stored)
    self.assertEqual(s.images.shape, (10, 224, 224, 3))
    np.testing.assert_array_equal(s.images, stored[:, 16:240, 16:240])
    batches = pipeline.TrainBatches(s, batch_size=4, seed=0)
    offsets = []
    for step in range(6):
      images, _ = batches.batch(step)
      self.assertEqual(images.shape, (4, 224, 224, 3))
      for image, i, (r, c) in zip(images, batches.indices(step),
                                  batches.crop_offsets(step)):
        np.testing.assert_array_equal(image, stored[i, r:r + 224, c:c + 224])
        offsets.append((r, c))
    self.assertTrue(all(0 <= r <= 32 and 0 <= c <= 32 for r, c in offsets))
    self.assertGreater(len(set(offsets)), 10)  # Random, not the center.
    # At 32 px the geometry scales: resize to 37 (= 32 * 256 / 224), crop.
    small = self.load("amazon", "full", size=32)
    self.assertEqual(small.uncropped.shape, (10, 37, 37, 3))
    np.testing.assert_array_equal(small.images, small.uncropped[:, 2:34, 2:34])

  def test_train_test_partition_full(self):
    full = self.load("amazon", "full", size=24)
    train_split = self.load("amazon", "train", size=24)
    test_split = self.load("amazon", "test", size=24)
    self.assertLen(train_split, 8)  # 80 / 20 of 10 images.
    self.assertLen(test_split, 2)
    self.assertEqual(sorted(_rows(train_split) + _rows(test_split)),
                     _rows(full))
    train_images = {im.tobytes() for im in train_split.images}
    self.assertEmpty(train_images & {im.tobytes() for im in test_split.images})
    again = self.load("amazon", "train", size=24)
    np.testing.assert_array_equal(again.images, train_split.images)

  def test_flat_layout(self):
    with tempfile.TemporaryDirectory() as tmp:
      manual = write_office31(os.path.join(tmp, "m"),
                              {"dslr": LAYOUT["dslr"]}, nested=False)
      s = self.load("dslr", "full", data_dir=os.path.join(tmp, "tfds"),
                    manual_dir=manual)
      self.assertLen(s, 5)

  def test_missing_folder_error(self):
    with tempfile.TemporaryDirectory() as tmp:
      data_dir, manual = os.path.join(tmp, "tfds"), os.path.join(tmp, "m")
      with self.assertRaises(FileNotFoundError) as cm:
        self.load("webcam", "full", data_dir=data_dir, manual_dir=manual)
      message = str(cm.exception)
      self.assertNotIn("\n", message)  # One paragraph.
      for path in (os.path.join(manual, "domain_adaptation_images", "webcam",
                                "images"),
                   os.path.join(manual, "webcam", "images")):
        self.assertIn(path, message)
      for hint in ("domain_adaptation_images.tar.gz", "BUILD.md",
                   "config.dataset.manual_dir", "'webcam'"):
        self.assertIn(hint, message)
      self.assertFalse(os.path.exists(os.path.join(data_dir, "office31")))
      # The default manual_dir is named when none is given.
      with self.assertRaisesRegex(
          FileNotFoundError, os.path.join(data_dir, "downloads", "manual",
                                          "office31")):
        registry.load_split("office31", "webcam", "full", 32,
                            data_dir=data_dir)
      # After the download, the same call works.
      write_office31(manual, {"webcam": LAYOUT["webcam"]})
      self.assertLen(self.load("webcam", "full", data_dir=data_dir,
                               manual_dir=manual), 6)

  def test_unknown_class_folder(self):
    with tempfile.TemporaryDirectory() as tmp:
      manual = write_office31(os.path.join(tmp, "m"),
                              {"amazon": {"back_pack": 1}})
      os.makedirs(os.path.join(manual, "domain_adaptation_images", "amazon",
                               "images", "backpack"))
      with self.assertRaisesRegex(ValueError,
                                  "Unexpected class folders \\['backpack'\\]"):
        self.load("amazon", "full", data_dir=os.path.join(tmp, "tfds"),
                  manual_dir=manual)

  def test_runlocal_config_trains(self):
    config = office31_resnet.get_config(
        f"runlocal,manual_dir={self.manual_dir},data_dir={self.data_dir}")
    config.num_train_steps = 2
    config.checkpoint_every_steps = 2
    workdir = self.create_tempdir().full_path
    state = train.train_and_evaluate(config, workdir)
    self.assertEqual(int(state.step), 2)
    final = os.path.join(workdir, "final_metrics.json")
    self.assertTrue(os.path.exists(final))
    self.assertIn("target/webcam_accuracy", open(final).read())


if __name__ == "__main__":
  absltest.main()
