"""Tests for robustjax.train.train_members: K models as one program == K runs.

Tiny runs (ResNet-8 width 4, 6 steps on 128 digits) so the whole file takes
about a minute on 2 CPU cores:

  python -m pytest tests/train/members_test.py
"""

import os
import tempfile

from absl.testing import absltest
import jax
import numpy as np

from configs import digits_resnet
from robustjax import checkpoint
from robustjax import io
from robustjax import models
from robustjax.compress import distillation
from robustjax.compress import pruning
from robustjax.compress import recipes
from robustjax.study import sweep
from robustjax.models import factory
from robustjax.train import trainer

# Vmapped and single programs round differently (float reassociation); on a
# few-step run a 1-ulp difference can grow to ~1e-3 in some weights (a
# perturbed single run does the same), while a wrong member would differ by
# O(0.1).
PARAM_ATOL = 5e-3


def tiny_config(seed=0, sparsity=0.0, steps=6):
  c = digits_resnet.get_config("runlocal,model=resnet8,width=4")
  c.seed = seed
  c.compress.init_sparsity = sparsity
  c.dataset.max_train_examples = 128
  c.dataset.max_eval_examples = 64
  c.num_train_steps = steps
  c.eval_every_steps = steps
  c.checkpoint_every_steps = steps
  return c


def max_abs_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


class GroupKeyTest(absltest.TestCase):

  def test_only_seed_and_init_sparsity_may_differ(self):
    a, b = tiny_config(), tiny_config(seed=1, sparsity=0.5)
    self.assertEqual(sweep.group_key(a), sweep.group_key(b))
    b.model.width = 8
    self.assertNotEqual(sweep.group_key(a), sweep.group_key(b))

  def test_from_config_uses_the_compress_pruner(self):
    self.assertIsNone(recipes.from_config(tiny_config(sparsity=0.0)))
    recipe = recipes.from_config(tiny_config(sparsity=0.75))
    self.assertIsNotNone(recipe.wrap_tx)


class DistilledMembersTest(absltest.TestCase):
  """Two students, each with its own teacher (stacked loss arguments)."""

  def test_each_student_learns_from_its_own_teacher(self):
    tmp = tempfile.mkdtemp()
    configs = [tiny_config(seed=i) for i in range(2)]
    teacher = factory.build_model(configs[0])
    x = np.zeros((1,) + factory.input_shape(configs[0])[1:], np.float32)
    teachers = [teacher.init(jax.random.key(100 + i), x) for i in range(2)]
    loss_fn = distillation.make_loss_fn(models.inference_fn(teacher), 4.0,
                                        0.9)
    recipe = lambda t: trainer.Recipe(loss_fn=loss_fn, loss_args=t)
    states = trainer.train_members(
        [trainer.Member(c, os.path.join(tmp, f"m{i}"), recipe(t))
         for i, (c, t) in enumerate(zip(configs, teachers))],
        os.path.join(tmp, "group"))
    single = lambda i, t: trainer.train_and_evaluate(
        configs[i], os.path.join(tmp, f"s{i}-{id(t)}"), recipe(t))
    own = [max_abs_diff(states[i].params, single(i, t).params)
           for i, t in enumerate(teachers)]
    for i, diff in enumerate(own):
      self.assertLess(diff, PARAM_ATOL, f"member {i}")
    # The teacher matters: member 1 is not what member 0's teacher gives.
    other = max_abs_diff(states[1].params, single(1, teachers[0]).params)
    self.assertGreater(other, PARAM_ATOL)
    self.assertGreater(other, 10 * own[1])


class MembersTest(absltest.TestCase):
  """One vmapped group of 2 (seed 0 dense, seed 1 at 50 %) vs 2 runs."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.configs = [tiny_config(seed=0, sparsity=0.0),
                   tiny_config(seed=1, sparsity=0.5)]
    cls.member_dirs = [os.path.join(cls.tmp, f"m{i}") for i in range(2)]
    cls.group_dir = os.path.join(cls.tmp, "group")
    # As the sweep runs them: the dense member of a pruned group gets the
    # all-kept masks (an exact no-op), so both states have one structure.
    cls.members = [trainer.Member(c, d, sweep._member_recipe(c, True))  # pylint: disable=protected-access
                   for c, d in zip(cls.configs, cls.member_dirs)]
    cls.states = trainer.train_members(cls.members, cls.group_dir)
    cls.singles = []
    for i, c in enumerate(cls.configs):
      d = os.path.join(cls.tmp, f"single{i}")
      state = trainer.train_and_evaluate(c, d, recipes.from_config(c))
      cls.singles.append((state, io.read_jsonl(
          os.path.join(d, "metrics.jsonl"))))

  def test_each_member_matches_its_separate_run(self):
    for i, (single, single_metrics) in enumerate(self.singles):
      member = self.states[i]
      self.assertEqual(int(member.step), int(single.step))
      self.assertLess(max_abs_diff(member.params, single.params), PARAM_ATOL,
                      f"member {i}")
      self.assertLess(max_abs_diff(member.batch_stats, single.batch_stats),
                      PARAM_ATOL, f"member {i}")
      rows = io.read_jsonl(os.path.join(self.member_dirs[i], "metrics.jsonl"))
      for split in ("train", "eval"):
        got = [r for r in rows if r["split"] == split]
        want = [r for r in single_metrics if r["split"] == split]
        self.assertEqual([r["step"] for r in got], [r["step"] for r in want])
        for g, w in zip(got, want):
          for key in ("loss", "test_accuracy", "target/uci_accuracy"):
            if key in w:
              self.assertAlmostEqual(g[key], w[key], delta=2e-2, msg=key)

  def test_pruned_member_has_the_single_runs_masks_and_sparsity(self):
    member = self.states[1]
    report = pruning.sparsity_report(jax.device_get(member.params))
    self.assertAlmostEqual(report["prunable_sparsity"], 0.5, places=3)
    single_masks = pruning.masks_of(self.singles[1][0].opt_state)
    member_masks = pruning.masks_of(member.opt_state)
    for a, b in zip(jax.tree.leaves(member_masks),
                    jax.tree.leaves(single_masks)):
      np.testing.assert_array_equal(a, b)
    # The dense member's masks keep everything; its single run has none.
    self.assertTrue(all(np.all(m) for m in jax.tree.leaves(
        pruning.masks_of(self.states[0].opt_state))))
    self.assertIsNone(pruning.masks_of(self.singles[0][0].opt_state))

  def test_member_dirs_look_like_single_runs(self):
    for i, d in enumerate(self.member_dirs):
      for name in ("config.json", "metrics.jsonl", "final_metrics.json"):
        self.assertTrue(os.path.exists(os.path.join(d, name)), name)
      ckpt = checkpoint.Checkpointer(d)
      self.assertEqual(ckpt.latest_step(), 6)
      restored = ckpt.restore(checkpoint.abstract(self.states[i]))
      ckpt.close()
      self.assertLess(max_abs_diff(restored.params, self.singles[i][0].params),
                      PARAM_ATOL)

  def test_rerun_resumes_without_training(self):
    with self.assertLogs(logger="absl", level="INFO") as logs:
      states = trainer.train_members(self.members, self.group_dir)
    self.assertTrue(any("Resuming from checkpoint at step 6" in line
                        for line in logs.output))
    for a, b in zip(states, self.states):
      self.assertEqual(max_abs_diff(a.params, b.params), 0.0)


if __name__ == "__main__":
  absltest.main()
