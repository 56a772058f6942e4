"""The study report on hand-made rows with per-example correctness."""

import os

from absl.testing import absltest
import numpy as np

from robustjax.study import claims
from robustjax.study import report


def _data():
  """An original and a pruned copy that loses accuracy under every shift."""
  u = np.random.default_rng(0).random(300)

  def model(method, shifted, original_id=None):
    cells = {(0, "clean", "source"): {None: u < 0.9},
             (0, "domain", "target"): {None: u < shifted},
             (0, "corruption", "fog"): {1: u[:200] < shifted,
                                        3: u[:200] < shifted - 0.1},
             (0, "adversarial", "pgd_linf"): {0.0: u[:200] < 0.9,
                                              0.1: u[:200] < shifted - 0.3}}
    return dict(arch="resnet8:16", method=method, size_bits=1e6,
                original_id=original_id, cells=cells)
  return claims.make_study_data({"o": model("original", 0.8),
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
    self.assertNotEmpty(os.listdir(os.path.join(workdir, "plots")))

  def test_rows_without_examples(self):
    path = report.write_report(_data().rows, self.create_tempdir().full_path)
    text = open(path).read()
    self.assertIn("**NOT TESTABLE**", text)
    self.assertIn("No per-example correctness for o, p", text)


if __name__ == "__main__":
  absltest.main()
