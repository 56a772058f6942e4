"""Metric arithmetic pinned on fake result rows."""

from absl.testing import absltest
import numpy as np

from robustjax.robustness import metrics


def _rows(accs, shift="corruption"):
  return [dict(shift=shift, name=n, level=s, accuracy=a)
          for (n, s), a in accs.items()]


class MetricsTest(absltest.TestCase):

  def test_corruption_error_is_normalised_by_baseline(self):
    model = _rows({("fog", 1): 0.9, ("fog", 2): 0.7, ("snow", 1): 0.5})
    base = _rows({("fog", 1): 0.8, ("fog", 2): 0.6, ("snow", 1): 0.75})
    ce = metrics.corruption_errors(model, base)
    np.testing.assert_allclose(ce["fog"], (0.1 + 0.3) / (0.2 + 0.4))
    np.testing.assert_allclose(ce["snow"], 0.5 / 0.25)
    np.testing.assert_allclose(metrics.mean_corruption_error(model, base),
                               (0.4 / 0.6 + 2.0) / 2)

  def test_ce_uses_only_shared_levels(self):
    model = _rows({("fog", 1): 0.5, ("fog", 2): 0.0})
    base = _rows({("fog", 1): 0.75})
    self.assertAlmostEqual(metrics.corruption_errors(model, base)["fog"], 2.0)

  def test_drop_retention_relative(self):
    self.assertAlmostEqual(metrics.drop(0.9, 0.6), 0.3)
    self.assertAlmostEqual(metrics.relative_robustness(0.8, 0.6), 0.75)
    self.assertAlmostEqual(metrics.retention(0.3, 0.6), 0.5)
    self.assertTrue(np.isnan(metrics.relative_robustness(0.0, 0.1)))

  def test_summary_excludes_eps_zero(self):
    rows = [dict(shift="clean", name="source", level=None, accuracy=0.8),
            dict(shift="adversarial", name="fgsm", level=0.0, accuracy=0.8),
            dict(shift="adversarial", name="fgsm", level=0.1, accuracy=0.2),
            dict(shift="adversarial", name="fgsm", level=0.2, accuracy=0.0),
            dict(shift="domain", name="uci", level=None, accuracy=0.4)]
    s = metrics.summarize(rows)
    self.assertAlmostEqual(s["adversarial"], 0.1)
    self.assertAlmostEqual(s["adversarial_relative"], 0.125)
    self.assertAlmostEqual(s["domain_relative"], 0.5)
    self.assertTrue(np.isnan(s["corruption"]))


if __name__ == "__main__":
  absltest.main()
