"""The study's plots: backend untouched, shifts without rows, seed groups."""

import math
import os
import sys

from absl.testing import absltest
import matplotlib

from robustjax.study import plots
from tests.study import report_test as rows_lib


class PlotsTest(absltest.TestCase):

  def test_plots_keep_the_backend_and_skip_pyplot(self):
    backend = matplotlib.get_backend()
    had_pyplot = "matplotlib.pyplot" in sys.modules
    folder = self.create_tempdir().full_path
    paths = plots.plots(rows_lib.grid_rows(), folder)
    self.assertEqual([os.path.basename(p) for p in paths],
                     ["accuracy_vs_size.png", "accuracy_vs_severity.png",
                      "accuracy_vs_eps.png"])
    for p in paths:
      with open(p, "rb") as f:
        self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
    self.assertEqual(matplotlib.get_backend(), backend)
    if not had_pyplot:
      self.assertNotIn("matplotlib.pyplot", sys.modules)

  def test_shifts_without_rows_are_left_out(self):
    rows = [r for r in rows_lib.grid_rows()
            if r["shift"] in ("clean", "domain")]
    paths = plots.plots(rows, self.create_tempdir().full_path)
    self.assertEqual([os.path.basename(p) for p in paths],
                     ["accuracy_vs_size.png"])

  def test_seed_groups_mean_and_std(self):
    groups = plots.seed_groups(rows_lib.grid_rows(seeds=(0, 1, 2)))
    self.assertEqual([(g.label, g.num_seeds) for g in groups],
                     [("a/original", 3), ("a/prune", 3), ("b/original", 3),
                      ("b/ptq", 3)])
    mean, std = groups[0].stat(
        lambda rs: [r for r in rs if r["shift"] == "clean"][0]["accuracy"])
    self.assertAlmostEqual(mean, 0.92)  # 0.90, 0.92, 0.94.
    self.assertAlmostEqual(std, 0.02)  # Sample std (ddof=1).
    # Without a seed field: one group per model, no std.
    single = plots.seed_groups(rows_lib.grid_rows())
    self.assertEqual([g.num_seeds for g in single], [1, 1, 1, 1])
    for g in single:
      mean, std = g.stat(lambda rs: 0.5)
      self.assertEqual(mean, 0.5)
      self.assertTrue(math.isnan(std))

  def test_seed_suffix_leaves_the_label(self):
    rows = (rows_lib.model_rows("a/original-seed0", "a:16", "original", 1e6,
                                0.9, 0.7, 0.4, seed=0) +
            rows_lib.model_rows("a/original-seed1", "a:16", "original", 1e6,
                                0.8, 0.7, 0.4, seed=1))
    groups = plots.seed_groups(rows)
    self.assertEqual([(g.label, g.num_seeds) for g in groups],
                     [("a/original", 2)])

  def test_caption_mentions_error_bars_only_with_seeds(self):
    self.assertIn("error bars: +- 1 standard deviation",
                  plots.plots_caption(rows_lib.grid_rows(seeds=(0, 1))))
    self.assertIn("no error bars", plots.plots_caption(rows_lib.grid_rows()))


if __name__ == "__main__":
  absltest.main()
