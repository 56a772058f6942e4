"""Tests for K-model evaluation: `Cell.run_many` against K single runs.

Models of one architecture share `apply_fn`; `run_many` evaluates them on a
cell by one program vmapped over their stacked variables (the same clean,
corrupted or transfer images for all; each model attacked with its own
gradients from the same starts). Every model's result must be its own
`run`'s. Fixtures (TinyNet, synthetic splits, the evals block) are
evaluators_test's. Run:

  python -m pytest tests/robustness/many_models_test.py
"""

import os
import subprocess
import sys
import tempfile
import textwrap
from unittest import mock

from absl.testing import absltest
import jax
import numpy as np

from robustjax import models
from robustjax.robustness import evaluators
from robustjax.robustness.evaluators import attack as attack_eval
from robustjax.robustness.evaluators import base
from robustjax.robustness.evaluators import corruption
from robustjax.robustness.evaluators import transfer
from tests.robustness import evaluators_test as fx

FEATURES = 7  # An architecture no other test of the module compiles.
SEEDS = (0, 1, 2)
SOURCE = "many_models_test source"  # Transfer images are cached by name.


def _models():
  """Three models near one another (the labels fit the first), so their
  accuracies are alike but their per-example results differ."""
  base = fx._variables(FEATURES, 0)
  leaves, tree = jax.tree.flatten(base)

  def near(seed):
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(tree, [
        x + 0.3 * seed * np.std(x) * rng.standard_normal(x.shape, np.float32)
        for x in leaves])
  return (models.inference_fn(fx.TinyNet(FEATURES)), [near(s) for s in SEEDS])


def _cells(staged=False):
  evals = fx._evals()
  evals.attacks.staged = staged
  cells = evaluators.build(evals, fx.TEST, fx.TARGETS, fx.SEED)
  fn, variables = _models()
  source = [c for c in cells if isinstance(c, attack_eval.AttackCell)]
  return cells + transfer.cells(source, SOURCE, fn, variables[0],
                                cells[0].batch_size)


class RunManyTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    transfer.forget()  # Other tests' sources may share a name.

  def _check(self, cells):
    fn, variables = _models()
    for cell in cells:
      many = cell.run_many(fn, variables)
      self.assertLen(many, len(variables))
      for k, (got, v) in enumerate(zip(many, variables)):
        want = cell.run(fn, v)
        # Bit for bit on the machines tried; a vmapped convolution may round
        # differently elsewhere, which could move an example, not a model.
        differ = (got.correct != want.correct).mean()
        self.assertLessEqual(differ, 0.02, f"{cell.key}, model {k}")
        self.assertEqual(got.correct.shape, want.correct.shape)
        self.assertEqual([r["level"] for r in got.rows],
                         [r["level"] for r in want.rows])
    # The models differ, so a mixed-up member would show.
    for cell in cells[:1] + cells[-1:]:
      got = [r.correct for r in cell.run_many(fn, variables)]
      for i in range(len(got)):
        for j in range(i):
          self.assertFalse(np.array_equal(got[i], got[j]), cell.key)

  def test_every_cell_type_matches_single_runs(self):
    self._check(_cells())

  def test_staged_attacks_match_single_runs(self):
    self._check([c for c in _cells(staged=True)
                 if isinstance(c, attack_eval.AttackCell)])

  def test_fused_corruptions_match_single_runs(self):
    with mock.patch.object(corruption, "CORRUPTED_CACHE_BYTES", 0):
      self._check([c for c in _cells()
                   if isinstance(c, corruption.CorruptionCell)])

  def test_one_model_is_run_exactly(self):
    fn, variables = _models()
    for cell in _cells(staged=True):
      np.testing.assert_array_equal(
          cell.run_many(fn, variables[:1])[0].correct,
          cell.run(fn, variables[0]).correct, err_msg=cell.key)

  def test_models_are_attacked_together_within_the_image_budget(self):
    fn, variables = _models()
    cell = next(c for c in _cells() if c.key == "adversarial/pgd_linf")
    want = [r.correct for r in cell.run_many(fn, variables)]
    spy = mock.patch.object(attack_eval, "adversarial_images",
                            wraps=attack_eval.adversarial_images)
    with spy as calls:
      cell.run_many(fn, variables)
      self.assertEqual(calls.call_count, 1)  # One program for the three.
    one_model = 4 * fx.TEST.images[:cell.n].size * 2  # Two radii > 0.
    with spy as calls, mock.patch.object(attack_eval, "MANY_IMAGES_BYTES",
                                         2 * one_model):
      got = [r.correct for r in cell.run_many(fn, variables)]
      self.assertEqual(calls.call_count, 2)  # Two models, then one.
    for g, w in zip(got, want):
      np.testing.assert_array_equal(g, w)

  def test_models_beyond_the_input_budget_run_in_several_programs(self):
    fn, variables = _models()
    cells = _cells()
    wants = [[r.correct for r in c.run_many(fn, variables)] for c in cells]
    for cell, want in zip(cells, wants):
      per_model = 4 * np.prod(cell.example_shape()) * cell.program_examples()
      sizes = []
      real = type(cell).correct_many

      def spy(self, apply_fn, part, mesh=None):
        sizes.append(len(part))
        return real(self, apply_fn, part, mesh)
      with mock.patch.object(base, "MANY_INPUT_BYTES", 2 * per_model), \
           mock.patch.object(type(cell), "correct_many", spy):
        self.assertEqual(cell.models_per_program(), 2)
        got = [r.correct for r in cell.run_many(fn, variables)]
      # Two models stacked, then the third alone (whose `run` goes through
      # `correct_many` of one model in the attack and transfer cells).
      self.assertIn(sizes, ([2], [2, 1]), cell.key)
      for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w, err_msg=cell.key)

  def test_a_kept_source_among_the_models_hands_over_its_images(self):
    fn, variables = _models()
    cells = [c for c in _cells() if isinstance(c, attack_eval.AttackCell)]
    transfer.forget()
    with transfer.keep_source_images(SOURCE, fn, variables[1]):
      for cell in cells:
        cell.run_many(fn, variables)
    kept = dict(transfer._ADVERSARIAL)
    self.assertLen(kept, len(cells))  # The source's only, once per cell.
    for cell in cells:
      want = transfer.adversarial_images(fn, variables[1], cell)
      np.testing.assert_allclose(kept[(SOURCE, cell.key, cell.levels)], want,
                                 atol=1e-6, err_msg=cell.key)
    transfer.forget()


_WORKER = """
import sys
import numpy as np
import jax
sys.path[:0] = [{root!r}]
from tests.robustness import many_models_test as t
assert jax.device_count() == 4, jax.devices()
fn, variables = t._models()
out = {{}}
for cell in t._cells(staged=True):
  for k, r in enumerate(cell.run_many(fn, variables)):
    out[f"{{cell.key}}|{{k}}"] = r.correct
np.savez({out!r}, **out)
"""


class MultiDeviceTest(absltest.TestCase):

  def test_four_devices_give_the_single_device_results(self):
    transfer.forget()
    out = os.path.join(tempfile.mkdtemp(), "many.npz")
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=4")
    subprocess.run([sys.executable, "-c", textwrap.dedent(_WORKER.format(
        root=fx.ROOT, out=out))], check=True, env=env, timeout=900)
    four = np.load(out)
    fn, variables = _models()
    cells = _cells(staged=True)
    self.assertLen(four.files, len(cells) * len(variables))
    for cell in cells:
      for k, v in enumerate(variables):
        differ = (four[f"{cell.key}|{k}"] != cell.run(fn, v).correct).mean()
        self.assertLessEqual(differ, 0.02, f"{cell.key}, model {k}")


if __name__ == "__main__":
  absltest.main()
