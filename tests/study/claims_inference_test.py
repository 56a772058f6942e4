"""The seed-level interval of a paired effect (robustjax.study.claims.inference)."""

from absl.testing import absltest
import numpy as np
from scipy import stats as scipy_stats

from robustjax.study.claims import inference


def _table(rng, seeds, n, sd_seed, sd_example, sd_interaction):
  """u[s, i] = a_s + b_i + c_si (crossed random effects)."""
  return (sd_seed * rng.standard_normal((seeds, 1)) +
          sd_example * rng.standard_normal((1, n)) +
          sd_interaction * rng.standard_normal((seeds, n)))


class SharedExampleVarianceTest(absltest.TestCase):

  def test_recovers_the_example_component(self):
    rng = np.random.default_rng(0)
    s, n, sd_b = 10, 2000, 0.5
    est = np.mean([inference.shared_example_variance(
        _table(rng, s, n, 0.3, sd_b, 1.0)) for _ in range(20)])
    # Truth: sd_b^2 / n (the seed and interaction parts are not in it).
    self.assertAlmostEqual(est / (sd_b ** 2 / n), 1.0, delta=0.1)

  def test_no_shared_component_is_about_zero(self):
    rng = np.random.default_rng(1)
    vals = [inference.shared_example_variance(_table(rng, 5, 500, 0.3, 0.0,
                                                     1.0))
            for _ in range(20)]
    self.assertGreaterEqual(min(vals), 0.0)  # Truncated at zero.
    # Compared with the interaction's contribution to var(d) / S.
    self.assertLess(np.mean(vals), 0.2 * 1.0 / (500 * 5))

  def test_one_seed(self):
    u = np.array([[0.0, 1.0, 0.0, 1.0]])
    self.assertAlmostEqual(inference.shared_example_variance(u),
                           u.var(ddof=1) / 4)


class EffectTest(absltest.TestCase):

  def test_seeds_only_is_the_t_interval(self):
    d = np.array([0.1, 0.3, 0.2])
    e = inference.effect(d, [np.zeros((3, 50))])
    self.assertEqual(e.df, 2)
    lo, hi = scipy_stats.t.interval(0.95, 2, loc=d.mean(),
                                    scale=d.std(ddof=1) / np.sqrt(3))
    est = e.interval(0.05)
    self.assertAlmostEqual(est.lo, lo)
    self.assertAlmostEqual(est.hi, hi)

  def test_examples_add_variance_at_the_normal_quantile(self):
    rng = np.random.default_rng(2)
    u = _table(rng, 3, 400, 0.0, 2.0, 0.5)
    d = u.mean(axis=1)
    e = inference.effect(d, [u])
    self.assertGreater(e.example_var, e.seed_var)
    self.assertAlmostEqual(e.se ** 2, e.seed_var + e.example_var)
    # Each part at its own quantile: t on S - 1 df for the seeds, normal
    # for the examples; so between the two pure intervals.
    t2, z = scipy_stats.t.ppf(0.975, 2), scipy_stats.norm.ppf(0.975)
    self.assertAlmostEqual(e.half_width(0.05), np.sqrt(
        t2 ** 2 * e.seed_var + z ** 2 * e.example_var))
    self.assertLess(e.half_width(0.05), t2 * e.se)
    self.assertGreater(e.half_width(0.05), z * e.se)


  def test_undefined_and_degenerate(self):
    self.assertTrue(np.isnan(inference.effect([0.1, np.nan], []).value))
    e = inference.effect([0.0, 0.0, 0.0], [np.zeros((3, 5))])
    self.assertEqual(e.interval().sign, 0)
    one = inference.effect([0.2], [np.zeros((1, 5))])
    self.assertEqual(one.interval().sign, 0)  # One seed decides nothing.

  def test_mde(self):
    rng = np.random.default_rng(3)
    u = _table(rng, 3, 300, 0.2, 0.3, 0.5)
    e = inference.effect(u.mean(axis=1), [u])
    self.assertGreater(e.mde(0.05), 2 * e.se)
    self.assertLess(e.mde(0.05, num_seeds=10), e.mde(0.05))
    self.assertGreater(e.mde(0.01), e.mde(0.05))

  def test_coverage_of_a_crossed_design(self):
    # A quick look (the full calibration is claims_calibration_test.py).
    rng = np.random.default_rng(4)
    covered = 0
    for _ in range(200):
      u = 0.1 + _table(rng, 3, 200, 0.3, 1.0, 1.0)
      covered += inference.effect(u.mean(axis=1), [u]).interval(
          0.05).lo <= 0.1 <= inference.effect(u.mean(axis=1),
                                                [u]).interval(0.05).hi
    self.assertBetween(covered, 182, 200)  # ~95 %, +-2 MC standard errors.


class PairedMeanDifferenceTest(absltest.TestCase):

  def test_interval(self):
    covered, trials = 0, 200
    rng = np.random.default_rng(0)
    for _ in range(trials):
      x = (rng.random(200) < 0.3).astype(np.float32)
      e, = inference.paired_mean_difference(x)
      covered += e.lo <= 0.3 <= e.hi
      self.assertAlmostEqual(e.value, x.mean(), places=6)
    self.assertBetween(covered, 181, 200)

  def test_constant_difference_is_exact(self):
    e, = inference.paired_mean_difference(np.full(50, 0.5))
    self.assertEqual((e.lo, e.hi), (0.5, 0.5))


if __name__ == "__main__":
  absltest.main()
