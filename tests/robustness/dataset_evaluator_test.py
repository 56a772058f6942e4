"""Tests for the `evals.datasets` evaluator (shifts from another dataset).

CIFAR-10-C cannot be downloaded here: `tfds.testing.mock_data` serves random
records with its real features through the same `tfds.data_source` the
registry reads. Run:

  python -m pytest tests/robustness/dataset_evaluator_test.py
"""

import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from configs import common
from robustjax import models
from robustjax.data import registry
from robustjax.robustness import evaluators
from robustjax.robustness.evaluators import base
from robustjax.robustness.evaluators import dataset
from robustjax.study import config_checks
from robustjax.study import runner


class Linear(nn.Module):
  """Mean colour -> 10 logits: fast to compile, inputs change predictions."""

  @nn.compact
  def __call__(self, x, train=False):
    del train
    return nn.Dense(10)(jnp.concatenate([x.mean((1, 2)), x.std((1, 2))], -1))


def _evals(**datasets):
  e = common.evals_block()
  e.clean, e.domain, e.batch_size = False, False, 16
  e.datasets.name = "cifar10_corrupted"
  e.datasets.domains = ("gaussian_noise_1", "gaussian_noise_3",
                        "frosted_glass_blur_2", "frosted_glass_blur_5",
                        "elastic_4")
  e.datasets.max_examples = 20
  e.datasets.as_corruption = True
  for k, v in datasets.items():
    e.datasets[k] = v
  return e


def _data(name="cifar10", size=32, data_dir=""):
  return ml_collections.ConfigDict(dict(name=name, image_size=size,
                                        data_dir=data_dir, manual_dir=""))


class DatasetEvaluatorTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    # Mocked splits must not stay in the caches.
    for clear in (registry._load_cached.cache_clear, dataset.clear_cache):
      clear()
      self.addCleanup(clear)

  def _build(self, evals, data=None, num_examples=24):
    with tfds.testing.mock_data(num_examples=num_examples):
      return evaluators.build(evals, None, {}, 0,
                              data=_data() if data is None else data)

  def test_corruption_cells_map_names_and_severities(self):
    cells = self._build(_evals())
    self.assertEqual(
        [(c.key, c.shift, c.levels, c.n) for c in cells],
        [("corruption/cifar10_corrupted/gaussian_noise", "corruption",
          (1, 3), 20),
         ("corruption/cifar10_corrupted/glass_blur", "corruption", (2, 5),
          20),
         ("corruption/cifar10_corrupted/elastic_transform", "corruption",
          (4,), 20)])
    for c in cells:
      self.assertIsInstance(c, evaluators.EVALUATORS["dataset"])
    # Each level reads its own tfds config, at the study's image size.
    self.assertEqual([s.name for s in cells[1].splits],
                     ["cifar10_corrupted/frosted_glass_blur_2/test",
                      "cifar10_corrupted/frosted_glass_blur_5/test"])
    self.assertEqual(cells[0].splits[0].images.shape, (20, 32, 32, 3))
    small = self._build(_evals(), data=_data(size=16))
    self.assertEqual(small[0].splits[0].images.shape, (20, 16, 16, 3))

  def test_rows_and_per_example_correctness(self):
    cells = self._build(_evals())
    apply_fn = models.inference_fn(Linear())
    variables = Linear().init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    header = {"model_id": "m", "seed": 0, "arch": "linear:1",
              "method": "original", "setting": {}, "size_bits": 1.0,
              "sparsity": 0.0}
    for cell in cells:
      result = cell.run(apply_fn, variables)
      self.assertEqual(result.correct.shape, (len(cell.levels), 20))
      for level, split, row, correct in zip(cell.levels, cell.splits,
                                            result.rows, result.correct):
        expected = np.argmax(apply_fn(variables, split.images / 255.0),
                             -1) == split.labels
        np.testing.assert_array_equal(correct, expected)
        self.assertEqual((row["shift"], row["name"], row["level"], row["n"]),
                         ("corruption", cell.name, level, 20))
        self.assertEqual(row["accuracy"], expected.mean())
        runner.validate_row({**header, **row})

  def test_models_evaluated_together_match_their_single_runs(self):
    cells = self._build(_evals())
    apply_fn = models.inference_fn(Linear())
    variables = [Linear().init(jax.random.key(k), jnp.zeros((1, 32, 32, 3)))
                 for k in range(3)]
    for cell in cells:
      self.assertEqual(cell.example_shape(), (32, 32, 3))
      together = cell.run_many(apply_fn, variables)
      for got, v in zip(together, variables):
        want = cell.run(apply_fn, v)
        np.testing.assert_array_equal(got.correct, want.correct,
                                      err_msg=cell.key)
        self.assertEqual(got.rows, want.rows)
    # Different models: a mixed-up member would show.
    self.assertFalse(np.array_equal(together[0].correct, together[1].correct))

  def test_domains_as_domain_shift_and_all_domains(self):
    cells = self._build(_evals(as_corruption=False,
                               domains=("fog_2", "elastic_4")))
    self.assertEqual([(c.key, c.shift, c.levels) for c in cells],
                     [("domain/cifar10_corrupted/fog_2", "domain", (None,)),
                      ("domain/cifar10_corrupted/elastic_4", "domain",
                       (None,))])
    # () = every domain: the 19 corruptions x 5 severities.
    everything = self._build(_evals(domains=(), max_examples=2),
                             num_examples=2)
    self.assertLen(everything, 19)
    self.assertTrue(all(c.levels == (1, 2, 3, 4, 5) for c in everything))
    self.assertEqual(sorted(c.name.split("/")[1] for c in everything),
                     sorted(registry.CIFAR10_C_CORRUPTIONS))

  def test_no_dataset_and_legacy_blocks_have_no_cells(self):
    self.assertEqual(self._build(_evals(name="")), [])
    legacy = _evals().to_dict()
    del legacy["datasets"]  # An evals block written before the field.
    evaluators.check_evals(legacy)
    self.assertEqual(evaluators.build(legacy, None, {}, 0), [])

  def test_registry_order_puts_dataset_rows_after_corruptions(self):
    self.assertEqual(tuple(evaluators.EVALUATORS),
                     ("clean", "domain", "corruption", "dataset",
                      "adversarial"))

  @parameterized.named_parameters(
      ("unknown_dataset", dict(name="cifar100_c"),
       r"^evals.datasets.name='cifar100_c' is not a registered dataset; use "
       r"\"\" \(none\) or one of cifar10, cifar10_corrupted"),
      ("unknown_domain", dict(domains=("gaussian_noise_6",)),
       r"^evals.datasets.domains names 'gaussian_noise_6', which is not a "
       r"domain of 'cifar10_corrupted'; its domains are gaussian_noise_1, "
       r".* \(and 87 more\)\.$"),
      ("string_domains", dict(domains="fog_1"),
       r"^evals.datasets.domains='fog_1' must be a tuple"),
      ("twice", dict(domains=("fog_1", "fog_1")),
       r"^evals.datasets.domains lists 'fog_1' twice\.$"),
      ("split", dict(split="train"),
       r"^evals.datasets.split='train': domain 'gaussian_noise_1' of "
       r"'cifar10_corrupted' has the splits test\.$"),
      ("not_corruptions", dict(name="cifar10", domains=()),
       r"^evals.datasets.as_corruption=True, but the domains of 'cifar10' are "
       r"not corruption levels; set it to False"),
      ("max_examples", dict(max_examples=0),
       r"^evals.datasets.max_examples=0 must be -1"),
      ("as_corruption", dict(as_corruption="yes"),
       r"^evals.datasets.as_corruption='yes' must be True or False\.$"),
  )
  def test_bad_block_is_one_sentence(self, change, message):
    evals = _evals().to_dict()  # A plain dict takes values of any type.
    evals["datasets"].update(change)
    with self.assertRaisesRegex(ValueError, message):
      evaluators.check_evals(evals)
    with self.assertRaisesRegex(ValueError, message):
      evaluators.build(evals, None, {}, 0, data=_data())
    # The launcher's check of the config's names says the same.
    config = common.get_base_config()
    config.evals = ml_collections.ConfigDict(evals)
    with self.assertRaisesRegex(ValueError, message):
      config_checks.check_config(config)

  def test_unknown_field_names_the_valid_ones(self):
    evals = _evals()
    evals.datasets.severities = (1,)
    with self.assertRaisesRegex(ValueError, r"^evals.datasets.severities is "
                                "not a field of evals.datasets; valid "
                                "fields: name, domains, split, max_examples, "
                                r"as_corruption\.$"):
      evaluators.check_evals(evals)

  def test_missing_files_keep_the_registry_message(self):
    with tempfile.TemporaryDirectory() as data_dir:
      with self.assertRaises(FileNotFoundError) as cm:
        evaluators.build(_evals(), None, {}, 0,
                         data=_data(data_dir=data_dir))
    message = str(cm.exception)
    self.assertIn("'cifar10_corrupted/gaussian_noise_1'", message)
    self.assertIn(f"is not prepared in {data_dir}", message)
    self.assertIn("tfds build cifar10_corrupted", message)
    self.assertNotIn("\n", message)

  def test_needs_the_data_block_and_matching_labels(self):
    with self.assertRaisesRegex(ValueError, r"needs the study's dataset "
                                r"block .* data=config.dataset\)\.$"):
      evaluators.build(_evals(), None, {}, 0)
    with self.assertRaisesRegex(
        ValueError, r"^evals.datasets.name='cifar10_corrupted' has 10 "
        r"classes and 3 channels, but the models are trained on 'digits' "
        r"\(10 classes, 1 channels\)"):
      evaluators.build(_evals(), None, {}, 0, data=_data(name="digits"))

  def test_splits_beyond_the_memory_budget_are_read_again(self):
    apply_fn = models.inference_fn(Linear())
    variables = Linear().init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    with tfds.testing.mock_data(num_examples=24):
      kept = [c.run(apply_fn, variables).correct
              for c in self._build(_evals())]
      dataset.clear_cache()
      budget = self._build(_evals())[0].splits[0].images.nbytes
      dataset.clear_cache()
      with mock.patch.object(dataset, "MAX_CACHED_BYTES", budget):
        cells = self._build(_evals())
        self.assertLen(dataset._SPLITS, 1)  # pylint: disable=protected-access
        with mock.patch.object(registry, "load_split",
                               wraps=registry.load_split) as reads:
          read = [c.run(apply_fn, variables).correct for c in cells]
        with mock.patch.object(registry, "load_split",
                               wraps=registry.load_split) as rebuild_reads:
          self._build(_evals())  # Another seed's cells: lengths are known.
    self.assertEqual(rebuild_reads.call_count, 0)
    # 5 levels in all, one kept: the other 4 were read from their files.
    self.assertEqual(reads.call_count, 4)
    self.assertLen(dataset._SPLITS, 1)  # pylint: disable=protected-access
    for a, b in zip(kept, read):
      np.testing.assert_array_equal(a, b)

  def test_splits_are_loaded_once_for_every_seed(self):
    with tfds.testing.mock_data(num_examples=24):
      a = evaluators.build(_evals(), None, {}, 0, data=_data())
      b = evaluators.build(_evals(), None, {}, 1, data=_data())
    for x, y in zip(a, b):
      self.assertEqual(x.key, y.key)
      for sx, sy in zip(x.splits, y.splits):
        self.assertIs(sx, sy)
    self.assertIsInstance(a[0], base.Cell)


if __name__ == "__main__":
  absltest.main()
