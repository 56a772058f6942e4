"""The study report on hand-made rows with per-example correctness."""

import os

from absl.testing import absltest
import numpy as np

from robustjax.study.claims import data as claims_data
from robustjax.study import report


def _data():
  """An original and a pruned copy that loses accuracy under every shift."""

  def model(method, shifted, original_id=None):
    cells = {}
    for seed in range(3):
      u = np.random.default_rng(seed).random(300)
      cells.update({
          (seed, "clean", "source"): {None: u < 0.9},
          (seed, "domain", "target"): {None: u < shifted},
          (seed, "corruption", "fog"): {1: u[:200] < shifted,
                                        3: u[:200] < shifted - 0.1},
          (seed, "adversarial", "pgd_linf"): {
              0.0: u[:200] < 0.9, 0.1: u[:200] < shifted - 0.3}})
    return dict(arch="resnet8:16", method=method, size_bits=1e6,
                original_id=original_id, cells=cells)
  return claims_data.make_study_data({"o": model("original", 0.8),
                                      "p": model("prune", 0.6, "o")})


class ReportTest(absltest.TestCase):

  def test_report_has_claims_tables_and_plots(self):
    data = _data()
    workdir = self.create_tempdir().full_path
    path = report.write_report(data.rows, workdir, title="fake",
                               examples=data.examples)
    text = open(path).read()
    self.assertIn("### (a) Compressed models lose robustness", text)
    self.assertIn("**SUPPORTED**", text)
    self.assertIn("### Sanity checks", text)
    self.assertIn("## Models (accuracy in %)", text)
    self.assertIn("claims_forest.png",
                  os.listdir(os.path.join(workdir, "plots")))
    self.assertIn("![claims forest plot](plots/claims_forest.png)", text)

  def test_rows_without_examples(self):
    path = report.write_report(_data().rows, self.create_tempdir().full_path)
    text = open(path).read()
    self.assertIn("**NOT TESTABLE**", text)
    self.assertIn("No per-example correctness for o, p", text)


if __name__ == "__main__":
  absltest.main()
