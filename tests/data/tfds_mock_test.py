"""The tfds catalogue datasets (CIFAR-10, CIFAR-10-C, DomainNet) on mock data.

None of them can be downloaded on the dev machine, so `tfds.testing.mock_data`
stands in: it serves random records with each dataset's real features
(DomainNet's images have random, variable sizes) through the same
`tfds.data_source` the registry reads.
"""

import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow_datasets as tfds

from configs import cifar10_resnet
from robustjax import train
from robustjax.data import registry


class MockDatasetsTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    # Mocked splits must not stay in the registry's cache.
    registry._load_cached.cache_clear()
    self.addCleanup(registry._load_cached.cache_clear)

  @parameterized.named_parameters(
      ("cifar10_train", "cifar10", None, "train", 32, 10),
      ("cifar10_test_resized", "cifar10", "cifar10", "test", 16, 10),
      ("cifar10_c", "cifar10_corrupted", "gaussian_noise_3", "test", 32, 10),
      ("cifar10_c_other", "cifar10_corrupted", "jpeg_compression_5", "test",
       24, 10),
      ("cifar10_c_glass", "cifar10_corrupted", "frosted_glass_blur_2", "test",
       32, 10),
      ("cifar10_c_elastic", "cifar10_corrupted", "elastic_4", "test", 32, 10),
      ("domainnet", "domainnet", "clipart", "train", 24, 345),
      ("domainnet_test", "domainnet", "sketch", "test", 40, 345),
  )
  def test_load_split(self, name, domain, split, size, num_classes):
    with tfds.testing.mock_data(num_examples=12):
      s = registry.load_split(name, domain, split, image_size=size)
    self.assertEqual(s.images.shape, (12, size, size, 3))
    self.assertEqual(s.images.dtype, np.uint8)
    self.assertEqual(s.labels.dtype, np.int32)
    self.assertTrue(np.all((s.labels >= 0) & (s.labels < num_classes)))
    self.assertGreater(s.images.std(), 10)  # Random pixels, not blank.
    domain = domain or registry.get_spec(name).domains[0]
    self.assertEqual(s.name, f"{name}/{domain}/{split}")

  def test_variable_sized_images_are_resized(self):
    with tfds.testing.mock_data(num_examples=8):
      raw = tfds.data_source("domainnet/real", split="train")
      records = [raw[i] for i in range(len(raw))]
      s = registry.load_split("domainnet", "real", "train", image_size=20,
                              max_examples=8)
    shapes = {r["image"].shape for r in records}
    self.assertGreater(len(shapes), 1)  # The mock sizes do vary.
    self.assertEqual(s.images.shape, (8, 20, 20, 3))
    np.testing.assert_array_equal(s.labels, [r["label"] for r in records])
    for image, record in zip(s.images, records):
      # Bilinear resizing keeps an image's mean colour (uniform noise).
      np.testing.assert_allclose(image.mean((0, 1)),
                                 record["image"].mean((0, 1)), atol=25)

  def test_max_examples(self):
    with tfds.testing.mock_data(num_examples=20):
      s = registry.load_split("cifar10", None, "train", 32, max_examples=5)
    self.assertLen(s, 5)

  @parameterized.named_parameters(
      ("cifar10", "cifar10", None, "cifar10"),
      ("cifar10_c", "cifar10_corrupted", "fog_2", "cifar10_corrupted"),
      ("domainnet", "domainnet", "real", "domainnet"),
  )
  def test_missing_dataset_error(self, name, domain, build_name):
    with tempfile.TemporaryDirectory() as data_dir:
      with self.assertRaises(FileNotFoundError) as cm:
        registry.load_split(name, domain, "test", image_size=32,
                            data_dir=data_dir)
      message = str(cm.exception)
      self.assertIn(repr(registry.get_spec(name).tfds_name(domain or name)),
                    message)
      self.assertIn(data_dir, message)
      self.assertIn(f"tfds build {build_name} --file_format=array_record",
                    message)
      self.assertIn("config.dataset.data_dir", message)
      self.assertNotIn("\n", message)
      # Not a deep tfds trace: the tfds exception is not chained.
      self.assertIsNone(cm.exception.__cause__)
      self.assertTrue(cm.exception.__context__ is None
                      or cm.exception.__suppress_context__)
      self.assertIn(f"is not prepared in {data_dir}", message)
      self.assertEqual(os.listdir(data_dir), [])  # Nothing written.


class MockTrainingTest(absltest.TestCase):

  def test_cifar10_config_trains_on_mock_data(self):
    registry._load_cached.cache_clear()
    self.addCleanup(registry._load_cached.cache_clear)
    config = cifar10_resnet.get_config("runlocal,model=resnet8,width=4")
    config.batch_size = 8
    config.eval_batch_size = 16
    config.num_train_steps = 2
    config.checkpoint_every_steps = 2
    workdir = self.create_tempdir().full_path
    with tfds.testing.mock_data(num_examples=24):
      state = train.train_and_evaluate(config, workdir)
    self.assertEqual(int(state.step), 2)
    self.assertTrue(os.path.exists(os.path.join(workdir, "final_metrics.json")))
    self.assertEqual(state.params["conv_init"]["kernel"].shape, (3, 3, 3, 4))


if __name__ == "__main__":
  absltest.main()
