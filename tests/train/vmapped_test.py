"""Tests for robustjax.train.vmapped: K models as one program == K runs.

Tiny runs (ResNet-8 width 4, 6 steps on 128 digits) so the whole file takes
about a minute on 2 CPU cores:

  python -m pytest tests/train/vmapped_test.py
"""

import functools
import os
import tempfile
import zlib

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from configs import digits_resnet
from robustjax import io_utils
from robustjax import models
from robustjax.compress import pruning
from robustjax.data import pipeline
from robustjax.robustness import attacks
from robustjax.robustness import corruptions
from robustjax.robustness.evaluators import attack as attack_eval
from robustjax.train import checkpoint
from robustjax.train import optim
from robustjax.train import trainer
from robustjax.train import vmapped

# Vmapped and single programs round differently (float reassociation); on a
# few-step run a 1-ulp difference can grow to ~1e-3 in some weights (a
# perturbed single run does the same), while a wrong member would differ by
# O(0.1).
PARAM_ATOL = 5e-3


def tiny_config(seed=0, sparsity=0.0, steps=6):
  c = digits_resnet.get_config("runlocal,model=resnet8,width=4")
  c.seed = seed
  c.pruning = {"sparsity": sparsity}
  c.dataset.max_train_examples = 128
  c.dataset.max_eval_examples = 64
  c.num_train_steps = steps
  c.eval_every_steps = steps
  c.checkpoint_every_steps = steps
  return c


def max_abs_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


class GroupTest(absltest.TestCase):

  def test_group_with_different_architectures_is_rejected(self):
    a, b = tiny_config(), tiny_config(seed=1, sparsity=0.5)
    vmapped.check_group([a, b])  # Seed and sparsity may differ.
    b.model.width = 8
    with self.assertRaisesRegex(ValueError, "model.width"):
      vmapped.check_group([a, b])

  def test_hooks_for_uses_the_compress_pruner(self):
    self.assertIsNone(vmapped.hooks_for(tiny_config(sparsity=0.0)))
    hooks = vmapped.hooks_for(tiny_config(sparsity=0.75))
    self.assertIsNotNone(hooks.init_masks)
    self.assertIsNotNone(hooks.wrap_tx)


class VmappedTrainingTest(absltest.TestCase):
  """One vmapped group of 2 (seed 0 dense, seed 1 at 50 %) vs 2 runs."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.configs = [tiny_config(seed=0, sparsity=0.0),
                   tiny_config(seed=1, sparsity=0.5)]
    cls.member_dirs = [os.path.join(cls.tmp, f"m{i}") for i in range(2)]
    cls.group_dir = os.path.join(cls.tmp, "group")
    cls.state, cls.finals = vmapped.train_and_evaluate_vmapped(
        cls.configs, cls.group_dir, cls.member_dirs)
    cls.singles = []
    for i, c in enumerate(cls.configs):
      d = os.path.join(cls.tmp, f"single{i}")
      state = trainer.train_and_evaluate(c, d, vmapped.hooks_for(c))
      cls.singles.append((state, io_utils.read_jsonl(
          os.path.join(d, "metrics.jsonl"))))

  def test_each_member_matches_its_separate_run(self):
    for i, (single, single_metrics) in enumerate(self.singles):
      member = jax.tree.map(lambda x, i=i: x[i], self.state)
      self.assertEqual(int(member.step), int(single.step))
      self.assertLess(max_abs_diff(member.params, single.params), PARAM_ATOL,
                      f"member {i}")
      self.assertLess(max_abs_diff(member.batch_stats, single.batch_stats),
                      PARAM_ATOL, f"member {i}")
      rows = io_utils.read_jsonl(os.path.join(self.member_dirs[i],
                                              "metrics.jsonl"))
      for split in ("train", "eval"):
        got = [r for r in rows if r["split"] == split]
        want = [r for r in single_metrics if r["split"] == split]
        self.assertEqual([r["step"] for r in got], [r["step"] for r in want])
        for g, w in zip(got, want):
          for key in ("loss", "test_accuracy", "target/uci_accuracy"):
            if key in w:
              self.assertAlmostEqual(g[key], w[key], delta=2e-2, msg=key)

  def test_pruned_member_has_the_single_runs_masks_and_sparsity(self):
    member = jax.tree.map(lambda x: x[1], self.state)
    report = pruning.sparsity_report(jax.device_get(member.params))
    self.assertAlmostEqual(report["prunable_sparsity"], 0.5, places=3)
    single_masks = self.singles[1][0].masks
    for a, b in zip(jax.tree.leaves(member.masks),
                    jax.tree.leaves(single_masks)):
      np.testing.assert_array_equal(a, b)
    # The dense member is saved like a dense single run (no masks).
    self.assertIsNone(self.singles[0][0].masks)

  def test_member_dirs_look_like_single_runs(self):
    for i, d in enumerate(self.member_dirs):
      for name in ("config.json", "metrics.jsonl", "final_metrics.json"):
        self.assertTrue(os.path.exists(os.path.join(d, name)), name)
      ckpt = checkpoint.Checkpointer(d)
      self.assertEqual(ckpt.latest_step(), 6)
      # The member checkpoint restores into the single run's state layout.
      restored = ckpt.restore(checkpoint.abstract(self.singles[i][0]))
      ckpt.close()
      self.assertLess(max_abs_diff(restored.params, self.singles[i][0].params),
                      PARAM_ATOL)

  def test_rerun_resumes_without_training(self):
    state, finals = vmapped.train_and_evaluate_vmapped(
        self.configs, self.group_dir, self.member_dirs)
    self.assertEqual(max_abs_diff(state.params, self.state.params), 0.0)
    self.assertEqual(finals, self.finals)

  def test_shared_batch_equals_the_same_batch_per_member(self):
    model = trainer.build_model(self.configs[0])
    tx = optim.make(self.configs[0].optimizer, 6)
    x = np.random.default_rng(0).integers(0, 255, (8, 16, 16, 1), np.uint8)
    y = np.arange(8, dtype=np.int32) % 10
    shared = jax.jit(vmapped.make_train_step(self.configs[0], model, tx, True))
    each = jax.jit(vmapped.make_train_step(self.configs[0], model, tx, False))
    a, ma = shared(self.state, x, y)
    b, mb = each(self.state, np.stack([x, x], 1), np.stack([y, y], 1))
    self.assertLess(max_abs_diff(a.params, b.params), 1e-5)
    np.testing.assert_allclose(ma["loss"], mb["loss"], rtol=1e-5)

  def test_robustness_vmapped_matches_per_model_evaluation(self):
    corrs = [corruptions.get_corruption(n) for n in ("gaussian_noise",
                                                       "contrast")]
    model = trainer.build_model(self.configs[0])
    apply_fn = models.inference_fn(model)
    _, evals = trainer.load_data(self.configs[0])
    split = evals["test"]
    n = 40  # Not a multiple of the chunk size: tests padding.
    images = np.asarray(pipeline.to_float(split.images[:n]))
    labels = split.labels[:n]
    key = jax.random.PRNGKey(3)
    eps, severities = (0.0, 0.05, 0.2), (1, 3, 5)
    attack = attacks.get_attack("fgsm")
    # The vmapped side runs the CPU-friendly unrolled convolution; the
    # references below use the plain model one model at a time.
    apply_v = models.inference_fn(vmapped.for_vmap(model, "cpu"))
    got = vmapped.robustness_vmapped(
        apply_v, self.state.variables, images, labels, key,
        corruptions=corrs, severities=severities, attack=attack,
        eps_grid=eps, chunk_size=16)
    keys = jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(n))
    for i in range(2):
      v = jax.tree.map(lambda x, i=i: x[i], self.state.variables)
      acc = lambda x, v=v: float(np.mean(  # pylint: disable=g-long-lambda
          np.argmax(apply_fn(v, x), -1) == labels))
      self.assertAlmostEqual(got["clean"][i], acc(images), places=6)
      want = attack_eval.robust_accuracy(apply_fn, v, jnp.asarray(images),
                                         jnp.asarray(labels), key, eps,
                                         attack)
      np.testing.assert_allclose(got["fgsm"][i], want, atol=1.5 / n)
      self.assertAlmostEqual(got["fgsm"][i][0], got["clean"][i], places=6)
      for c in corrs:
        ckeys = jax.vmap(jax.random.fold_in, (0, None))(
            keys, zlib.crc32(c.name.encode()) & 0x7FFFFFFF)
        for j, s in enumerate(severities):
          x = jax.vmap(functools.partial(
              lambda x, k, s, c: c.apply(x[None], s, k)[0], s=s, c=c))(
                  jnp.asarray(images), ckeys)
          self.assertAlmostEqual(got[c.name][i][j], acc(x), delta=1.5 / n,
                                 msg=f"{c.name} severity {s}")
    # Chunking and the level map do not change the results.
    again = vmapped.robustness_vmapped(
        apply_fn, self.state.variables, images, labels, key,
        corruptions=corrs, severities=severities, attack=attack,
        eps_grid=eps, level_map="map")
    for name in got:
      np.testing.assert_allclose(again[name], got[name], atol=1.5 / n)


if __name__ == "__main__":
  absltest.main()
