"""The study's TensorBoard curves, written from rows and read back."""

import os

from absl.testing import absltest

from robustjax.study import tb
from robustjax.train import metrics


def _rows(model_id, clean, corruption, adversarial, seed=None):
  """One model: clean, one domain, fog at severities 1-3, PGD at 3 eps."""
  base = dict(model_id=model_id, arch="resnet8:16", method="prune",
              setting={}, size_bits=1e6, sparsity=0.5, original_id=None,
              n=100)
  if seed is not None:
    base["seed"] = seed
  rows = [dict(base, shift="clean", name="source", level=None,
               accuracy=clean),
          dict(base, shift="domain", name="uci", level=None, accuracy=0.5)]
  rows += [dict(base, shift="corruption", name="fog", level=s, accuracy=a)
           for s, a in zip((1, 2, 3), corruption)]
  rows += [dict(base, shift="adversarial", name="pgd_linf", level=e,
                accuracy=a) for e, a in zip((0.0, 0.05, 0.1), adversarial)]
  return rows


class StudyTensorBoardTest(absltest.TestCase):

  def test_curves_round_trip(self):
    workdir = self.create_tempdir().full_path
    rows = (_rows("r8/prune-s0.5", 0.9, (0.8, 0.6, 0.4), (0.9, 0.5, 0.1)) +
            _rows("r8/other", 0.8, (0.7, 0.7, 0.7), (0.8, 0.4, 0.2)))
    folder = tb.write_study_summaries(rows, workdir)
    self.assertEqual(folder, os.path.join(workdir, "tb", "study"))
    self.assertCountEqual(os.listdir(folder),
                          ["r8__prune-s0.5", "r8__other"])
    scalars = metrics.read_scalars(folder)
    run = scalars["r8__prune-s0.5"]
    self.assertEqual(run["corruption/fog"],
                     [(1, 80.0), (2, 60.0), (3, 40.0)])  # step = severity.
    # Eps are numbered: step 0, 1, 2 = eps 0, 0.05, 0.1.
    self.assertEqual([s for s, _ in run["adversarial/pgd_linf"]], [0, 1, 2])
    self.assertAlmostEqual(run["adversarial/pgd_linf"][2][1], 10.0, places=4)
    self.assertAlmostEqual(run["clean/accuracy"][0][1], 90.0, places=4)
    self.assertAlmostEqual(run["domain/uci"][0][1], 50.0)
    # R = mean corruption accuracy / clean = 0.6 / 0.9.
    self.assertAlmostEqual(run["robustness/R_corruption"][0][1], 0.6 / 0.9,
                           places=5)
    self.assertEqual(scalars["r8__other"]["corruption/mean"],
                     [(1, 70.0), (2, 70.0), (3, 70.0)])

  def test_rewrite_replaces_and_seeds_are_averaged(self):
    workdir = self.create_tempdir().full_path
    tb.write_study_summaries(_rows("m", 0.9, (0.8,) * 3, (0.9,) * 3),
                             workdir)
    rows = (_rows("m", 0.9, (0.8, 0.6, 0.4), (0.9,) * 3, seed=0) +
            _rows("m", 0.9, (0.6, 0.4, 0.2), (0.9,) * 3, seed=1))
    tb.write_study_summaries(rows, workdir)
    curve = metrics.read_scalars(os.path.join(workdir, "tb", "study"))["m"][
        "corruption/fog"]
    self.assertEqual([s for s, _ in curve], [1, 2, 3])  # One point a step.
    for (_, got), want in zip(curve, (70.0, 50.0, 30.0)):
      self.assertAlmostEqual(got, want, places=4)

  def test_level_steps(self):
    rows = _rows("m", 0.9, (0.8,) * 3, (0.9,) * 3)
    self.assertEqual(tb.level_steps(rows, "corruption"), {1: 1, 2: 2, 3: 3})
    self.assertEqual(tb.level_steps(rows, "adversarial"),
                     {0.0: 0, 0.05: 1, 0.1: 2})


if __name__ == "__main__":
  absltest.main()
