"""The grouped (vmapped-members) study path: which models group, and that a
grouped study gives the sequential study's results."""

import json
import os
import shutil
import tempfile

from unittest import mock

from absl.testing import absltest
import ml_collections
import numpy as np

from configs import default
from robustjax.compress import recipes
from robustjax.compress import saved
from robustjax.robustness.evaluators import base as evaluators_base
from robustjax.study import grid
from robustjax.study import grouped
from robustjax.study import journal as journal_lib
from robustjax.study import runner
from robustjax.study.claims import analysis as claims_analysis
from robustjax.study.claims import data as claims_data

# Accuracies may move by float reassociation (members are batched): a few
# examples of the smallest split at most. On the CPUs tried they are equal.
ACCURACY_ATOL = 0.02


def small_config(mode: str) -> ml_collections.ConfigDict:
  """A study whose originals (with the replicates) form one group, its
  one-shot fine-tunes (2 sparsities x 2 seeds) another, and the distilled
  students (each seed's own teacher) and their controls one each."""
  c = default.get_config("runlocal")
  c.study.archs = ("resnet8:4",)
  c.study.negative_control = "resnet8:4"
  c.study.prune.sparsities = (0.5, 0.9)
  c.study.distill.teacher = "resnet8:4"
  c.study.distill.students = ("resnet8:2",)
  c.study.quantize.weight_bits = (8,)
  c.evals.corruptions.names = ("gaussian_noise",)
  c.evals.corruptions.severities = (1, 3)
  c.evals.attacks.names = ("fgsm",)
  c.study.grouped = mode
  return c


def spec(model_id, arch="resnet8:4", method="original", base=None, **st):
  return grid.ModelSpec(model_id, arch, method, tuple(sorted(st.items())),
                        original_id=None if method == "original" else base,
                        base_id=base)


class GroupingTest(absltest.TestCase):

  def test_auto_is_sequential_on_cpu_and_grouped_on_accelerators(self):
    c = small_config("auto")
    self.assertFalse(grouped.enabled(c))  # This test process runs on CPU.
    self.assertFalse(grouped.enabled(c, backend="cpu"))
    self.assertTrue(grouped.enabled(c, backend="gpu"))
    self.assertTrue(grouped.enabled(c, backend="tpu"))
    self.assertTrue(grouped.enabled(small_config("on"), backend="cpu"))
    self.assertFalse(grouped.enabled(small_config("off"), backend="gpu"))
    with self.assertRaisesRegex(ValueError, "study.grouped.*auto"):
      grouped.enabled(small_config("maybe"))

  def test_students_group_by_arch_and_alpha_controls_by_arch(self):
    d = lambda i, alpha, arch="resnet8:2": spec(
        i, arch, "distill", base="o", alpha=alpha, teacher="resnet8:4",
        temperature=4.0)
    self.assertEqual(grouped.group_of(d("a", 0.9)),
                     grouped.group_of(d("b", 0.9)))
    self.assertNotEqual(grouped.group_of(d("a", 0.9)),
                        grouped.group_of(d("b", 0.5)))
    self.assertNotEqual(grouped.group_of(d("a", 0.9)),
                        grouped.group_of(d("b", 0.9, "resnet8:4")))
    control = spec("c", "resnet8:2", "distill_control", base="o", alpha=0.0,
                   teacher=None)
    self.assertEqual(grouped.group_of(control), ("control", "resnet8:2"))

  def test_only_shared_programs_group(self):
    o = spec("o")
    self.assertEqual(grouped.group_of(o), ("train", "resnet8:4"))
    self.assertEqual(grouped.group_of(spec("r", method="replicate")),
                     grouped.group_of(o))
    one_shot = [spec(f"p{s}", method="prune", base="o", sparsity=s,
                     scope="global", schedule="oneshot", structured=False)
                for s in (0.5, 0.9)]
    self.assertEqual(grouped.group_of(one_shot[0]),
                     grouped.group_of(one_shot[1]))
    for alone in (
        spec("g", method="prune", base="o", sparsity=0.97, scope="global",
             schedule="gradual", structured=False),
        spec("c", method="prune", base="o", sparsity=0.5, scope="global",
             schedule="oneshot", structured=True),
        spec("q", method="quantize", base="o", weight_bits=8)):
      self.assertIsNone(grouped.group_of(alone), alone.model_id)

  def test_groups_hold_unbuilt_wanted_models_originals_first(self):
    c = small_config("on")
    specs = grid.model_specs(c)
    seeds = grid.seeds(c)
    by_id = {s.model_id: s for s in specs}
    pruned = [s for s in specs if s.method == "prune"]
    # Cells of one pruned model pending: it needs its original built too.
    wanted = grouped.needed(by_id, [(pruned[0], seeds[0])])
    self.assertEqual(wanted, {(pruned[0].model_id, seeds[0]),
                              (pruned[0].base_id, seeds[0])})
    everything = grouped.needed(by_id, [(s, r) for s in specs for r in seeds])
    groups = grouped.groups(specs, seeds, everything, lambda s, r: False)
    self.assertEqual([g[0][0].method for g in groups],
                     ["original", "prune", "distill", "distill_control"])
    self.assertLen(groups[0], 2 * len(seeds))  # originals + replicates
    self.assertLen(groups[1], 2 * len(seeds))  # 2 sparsities
    self.assertLen(groups[2], len(seeds))  # one student arch
    self.assertLen(groups[3], len(seeds))
    # Built models leave; a group of one is left to the sequential path.
    built = lambda s, r: not (s.method == "prune" and r == seeds[0] and
                              s.model_id == pruned[0].model_id)
    self.assertEqual(grouped.groups(specs, seeds, everything, built), [])
    self.assertNotEqual(grouped.folder_name(groups[1]),
                        grouped.folder_name(groups[1][:3]))

  def test_train_together_refuses_different_programs(self):
    c = small_config("on")
    a = recipes.plan_original(c, "/nonexistent/a", "resnet8:4")
    b = recipes.plan_original(c, "/nonexistent/b", "resnet8:8")
    with self.assertRaisesRegex(ValueError, "differ only in seed"):
      recipes.train_together([a, b], "/nonexistent/group")


class GroupedStudyTest(absltest.TestCase):
  """`study.grouped=on` gives the sequential study's results on CPU."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    cls.rows, cls.together = {}, {}
    real = evaluators_base.Cell.run_many
    for mode in ("on", "off"):
      workdir = os.path.join(cls.root, mode)
      sizes = cls.together[mode] = []

      def run_many(cell, apply_fn, variables, *args, sizes=sizes):
        sizes.append((cell.key, len(variables)))
        return real(cell, apply_fn, variables, *args)
      with mock.patch.object(evaluators_base.Cell, "run_many", run_many):
        cls.rows[mode] = runner.run_study(small_config(mode), workdir)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def test_models_were_trained_in_groups(self):
    folder = os.path.join(self.root, "on", "models", "groups")
    # originals; one-shot fine-tunes; students; their controls
    self.assertLen(os.listdir(folder), 4)
    self.assertFalse(os.path.exists(os.path.join(self.root, "off", "models",
                                                 "groups")))
    c = small_config("on")
    for s in grid.model_specs(c):
      for r in grid.seeds(c):
        self.assertTrue(saved.is_done(os.path.join(
            self.root, "on", "models",
            f"{s.model_id.replace('/', '__')}__s{r}")), (s.model_id, r))

  def test_models_were_evaluated_together(self):
    self.assertEqual({k for k, _ in self.together["on"]},
                     {k for k, _ in self.together["off"]})
    self.assertEqual({n for _, n in self.together["off"]}, {1})
    # Per seed, resnet8:4's original, replicate and two fine-tunes (and
    # its PTQ model alone); the student and its control (resnet8:2).
    self.assertEqual(max(n for _, n in self.together["on"]), 4)
    self.assertIn(("adversarial/transfer_fgsm", 3), self.together["on"])
    self.assertEqual(sum(n for _, n in self.together["on"]),
                     sum(n for _, n in self.together["off"]))

  def test_same_rows_and_accuracies(self):
    key = lambda r: (r["model_id"], r["seed"], r["shift"], r["name"],
                     json.dumps(r["level"]))
    on = {key(r): r for r in self.rows["on"]}
    off = {key(r): r for r in self.rows["off"]}
    self.assertEqual(on.keys(), off.keys())
    for k in on:
      self.assertEqual(on[k]["n"], off[k]["n"])
      self.assertEqual(on[k]["size_bits"], off[k]["size_bits"], k)
      self.assertLessEqual(abs(on[k]["accuracy"] - off[k]["accuracy"]),
                           ACCURACY_ATOL, k)
    diffs = [abs(on[k]["accuracy"] - off[k]["accuracy"]) for k in on]
    self.assertLessEqual(float(np.mean(diffs)), ACCURACY_ATOL / 4)

  def test_same_verdicts(self):
    verdicts = {}
    for mode in ("on", "off"):
      journal = journal_lib.Journal(os.path.join(self.root, mode,
                                                 runner.JOURNAL))
      result = claims_analysis.test_claims(
          claims_data.StudyData(journal_lib.rows_of(journal),
                                journal_lib.examples_of(journal)),
          claims_analysis.Options.from_config(small_config(mode).to_dict()))
      verdicts[mode] = ([(v.key, v.verdict) for v in result.verdicts],
                        [c.verdict for c in result.control])
    self.assertLen(verdicts["on"][0], 4)
    self.assertEqual(verdicts["on"], verdicts["off"])


if __name__ == "__main__":
  absltest.main()
