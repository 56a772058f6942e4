"""robustjax.data.prepare and launch/prepare_data.py, offline.

* The embedded digits are prepared and counted (real data, exact sizes).
* A TFRecord copy (what `tfds build` writes by default) is made here without
  TensorFlow: the prepared ArrayRecord shards are re-framed as TFRecord files
  (length, masked CRC-32C, data, masked CRC-32C) and `dataset_info.json` is
  set back to `tfrecord`. The registry must refuse it with the conversion
  command, and `prepare` must convert it back to the very same records.
* Office-31 from a small generated folder fails the size check with an
  error naming the missing images and classes, and so does every load of a
  copy prepared from a half-extracted folder, until the folder is complete.
* Building CIFAR-10 without TensorFlow stops before downloading anything.
"""

import dataclasses
import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from unittest import mock

from absl.testing import absltest
from array_record.python import array_record_module
import numpy as np
import tensorflow_datasets as tfds

from configs import office31_resnet
from robustjax.data import prepare
from robustjax.data import registry
from tests.data import office31_test

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _frame(record: bytes) -> bytes:
  length = struct.pack("<Q", len(record))
  return (length + struct.pack("<I", prepare.masked_crc32c(length)) + record
          + struct.pack("<I", prepare.masked_crc32c(record)))


def make_tfrecord_copy(version_dir):
  """Turns a prepared ArrayRecord dataset version into a TFRecord one."""
  for name in sorted(os.listdir(version_dir)):
    if ".array_record-" not in name:
      continue
    path = os.path.join(version_dir, name)
    reader = array_record_module.ArrayRecordReader(path)
    records = reader.read_all()
    reader.close()
    with open(path.replace(".array_record-", ".tfrecord-"), "wb") as f:
      f.write(b"".join(_frame(r) for r in records))
    os.remove(path)
  info_path = os.path.join(version_dir, "dataset_info.json")
  with open(info_path) as f:
    info = json.load(f)
  info["fileFormat"] = "tfrecord"
  with open(info_path, "w") as f:
    json.dump(info, f)


class PrepareTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    registry._load_cached.cache_clear()
    self.addCleanup(registry._load_cached.cache_clear)
    self.data_dir = self.create_tempdir().full_path

  def test_digits(self):
    counts = prepare.prepare("digits", data_dir=self.data_dir)
    self.assertEqual(counts, registry.get_spec("digits").expected_counts)
    shard = os.path.join(self.data_dir, "digits", "uci", "1.0.0",
                         "digits-test.array_record-00000-of-00001")
    mtime = os.path.getmtime(shard)
    with self.assertLogs(logger="absl", level="INFO") as logs:
      self.assertEqual(prepare.prepare("digits", data_dir=self.data_dir),
                       counts)
    self.assertEqual(os.path.getmtime(shard), mtime)  # Reused, not rebuilt.
    self.assertTrue(any("already prepared in ArrayRecord" in l
                        for l in logs.output))

  def test_crc32c(self):
    self.assertEqual(prepare.crc32c(b"123456789"), 0xE3069283)  # RFC 3720.
    self.assertEqual(prepare.crc32c(b""), 0)

  def test_tfrecord_copy_is_converted_in_place(self):
    original = registry.load_split("digits", "uci", "test", 12,
                                   data_dir=self.data_dir)
    copy_dir = self.create_tempdir().full_path
    shutil.copytree(os.path.join(self.data_dir, "digits"),
                    os.path.join(copy_dir, "digits"))
    version_dir = os.path.join(copy_dir, "digits", "uci", "1.0.0")
    make_tfrecord_copy(version_dir)
    self.assertEqual(registry.prepared_format("digits/uci", copy_dir),
                     "tfrecord")
    registry._load_cached.cache_clear()
    with self.assertRaises(FileNotFoundError) as cm:
      registry.load_split("digits", "uci", "test", 12, data_dir=copy_dir)
    message = str(cm.exception)
    self.assertIn("in tfrecord format", message)
    self.assertIn(f"python launch/prepare_data.py --dataset=digits "
                  f"--data_dir={copy_dir}", message)
    self.assertNotIn("\n", message)

    counts = prepare.prepare("digits", data_dir=copy_dir, domains=["uci"])
    self.assertEqual(counts, {"uci": {"test": 1797}})
    self.assertEqual(registry.prepared_format("digits/uci", copy_dir),
                     "array_record")
    converted = registry.load_split("digits", "uci", "test", 12,
                                    data_dir=copy_dir)
    np.testing.assert_array_equal(converted.images, original.images)
    np.testing.assert_array_equal(converted.labels, original.labels)
    # The catalogue datasets' read path (tfds.data_source) sees it too.
    self.assertLen(tfds.data_source("digits/uci", split="test",
                                    data_dir=copy_dir), 1797)
    # Converted once: a second run leaves the files alone.
    self.assertEqual(prepare.convert_to_array_record(version_dir), 0)

  def test_damaged_tfrecord(self):
    registry.load_split("digits", "uci", "test", 12, data_dir=self.data_dir)
    version_dir = os.path.join(self.data_dir, "digits", "uci", "1.0.0")
    make_tfrecord_copy(version_dir)
    shard = os.path.join(version_dir, "digits-test.tfrecord-00000-of-00001")
    with open(shard, "r+b") as f:
      f.truncate(os.path.getsize(shard) - 100)
    with self.assertRaisesRegex(ValueError, "truncated record at byte"):
      prepare.convert_to_array_record(version_dir)
    with open(shard, "r+b") as f:
      f.seek(3)
      f.write(b"\x07")  # Corrupt the first length.
    with self.assertRaisesRegex(ValueError, "bad record length CRC at byte 0"):
      list(prepare.read_tfrecord(shard))

  def test_office31_counts(self):
    manual = office31_test.write_office31(
        os.path.join(self.create_tempdir().full_path, "m"))
    with self.assertRaises(ValueError) as cm:
      prepare.prepare("office31", data_dir=self.data_dir, manual_dir=manual)
    message = str(cm.exception)
    self.assertIn("office31/amazon split 'train' has 10 examples, expected "
                  "2,817 (2,807 missing)", message)
    self.assertIn("office31/dslr split 'train' has 5 examples, expected 498",
                  message)
    self.assertIn("office31/webcam split 'train' has 6 examples", message)
    self.assertIn("classes without images: bike_helmet, bookcase", message)
    self.assertIn("(29 of 31)", message)
    self.assertIn(manual, message)
    self.assertIn("--overwrite", message)
    self.assertNotIn("\n", message)
    # More images, then --overwrite: rebuilt (still short of the real size).
    folder = os.path.join(manual, "domain_adaptation_images", "amazon",
                          "images", "back_pack")
    for i in (1, 2):
      shutil.copy(os.path.join(folder, f"frame_000{i}.jpg"),
                  os.path.join(folder, f"frame_010{i}.jpg"))
    with self.assertRaisesRegex(ValueError, "'train' has 12 examples"):
      prepare.prepare("office31", data_dir=self.data_dir, manual_dir=manual,
                      domains=["amazon"], overwrite=True)

  def test_a_partial_office31_copy_is_refused_until_complete(self):
    root = self.create_tempdir().full_path
    # Half-extracted: one of the two bike images is missing.
    manual = office31_test.write_office31(
        os.path.join(root, "m"), {"dslr": {"back_pack": 3, "bike": 1}})
    load = lambda **kw: registry.load_split(
        "office31", "dslr", "full", 16, data_dir=self.data_dir,
        manual_dir=manual, **kw)
    folder = os.fspath(registry.custom_builder(
        registry.get_spec("office31"), "dslr", self.data_dir).data_path)
    published = dataclasses.replace(registry.get_spec("office31"),
                                    expected_counts={"dslr": {"train": 5}})
    with mock.patch.dict(registry.DATASETS, {"office31": published}):
      for _ in range(2):  # Built, then from the cache: refused both times.
        registry._load_cached.cache_clear()
        with self.assertRaises(ValueError) as cm:
          load()
        message = str(cm.exception)
        self.assertIn("office31/dslr split 'train' has 4 examples, expected 5 "
                      "(1 missing)", message)
        self.assertIn(f"The prepared copy {folder} is then incomplete: "
                      "delete it", message)
        self.assertIn("config.dataset.allow_partial=True", message)
        self.assertNotIn("\n", message)
      self.assertLen(load(allow_partial=True), 4)  # Deliberately partial.
      # The user completes the folder and deletes the copy, as told.
      bike = os.path.join(manual, "domain_adaptation_images", "dslr",
                          "images", "bike")
      shutil.copy(os.path.join(bike, "frame_0001.jpg"),
                  os.path.join(bike, "frame_0002.jpg"))
      shutil.rmtree(folder)
      registry._load_cached.cache_clear()
      self.assertLen(load(), 5)

  def test_runlocal_configs_allow_partial_folders(self):
    self.assertTrue(office31_resnet.get_config(
        "runlocal").dataset.allow_partial)
    self.assertFalse(office31_resnet.get_config().dataset.allow_partial)

  def test_unknown_domain(self):
    with self.assertRaisesRegex(ValueError, r"no domain\(s\) \['glass_blur_1'"
                                r"\]; its domains are gaussian_noise_1"):
      prepare.prepare("cifar10_corrupted", data_dir=self.data_dir,
                      domains=["glass_blur_1"])

  def test_catalogue_build_without_tensorflow(self):
    if importlib.util.find_spec("tensorflow") is not None:
      self.skipTest("TensorFlow is installed: tfds would try to download.")
    with self.assertRaises(RuntimeError) as cm:
      prepare.prepare("cifar10", data_dir=self.data_dir)
    message = str(cm.exception)
    self.assertIn("Building cifar10 needs TensorFlow", message)
    self.assertIn("pip install tensorflow-cpu==2.21.0", message)
    self.assertIn("Nothing was downloaded", message)
    self.assertEqual(os.listdir(self.data_dir), [])


class LauncherTest(absltest.TestCase):

  def test_prepare_data_digits(self):
    with tempfile.TemporaryDirectory() as data_dir:
      result = subprocess.run(
          [sys.executable, os.path.join(ROOT, "launch", "prepare_data.py"),
           "--dataset=digits", f"--data_dir={data_dir}", "--domains=uci"],
          capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
      self.assertEqual(result.returncode, 0, result.stderr[-3000:])
      self.assertIn("digits/uci: test 1,797", result.stderr)
      self.assertIn("Done: digits is ready (1 domains, 1,797 examples)",
                    result.stderr)
      self.assertTrue(os.path.isdir(os.path.join(data_dir, "digits", "uci")))
      self.assertFalse(os.path.exists(os.path.join(data_dir, "digits",
                                                   "mnist")))

  def test_bad_dataset(self):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "launch", "prepare_data.py"),
         "--dataset=svhn", "--data_dir=/nonexistent"],
        capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    self.assertNotEqual(result.returncode, 0)
    self.assertIn("Unknown dataset 'svhn'", result.stderr)


if __name__ == "__main__":
  absltest.main()
