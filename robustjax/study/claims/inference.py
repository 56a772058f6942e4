"""Seed-level inference for paired effects, with test-example sampling.

The unit of replication is the training seed: every model of a study is
trained once per seed, and all of them are scored on the same test examples.
An effect (e.g. R(original) - R(compressed)) is computed per seed, d_s, and
its estimate is the mean over the S seeds. Two things make that mean vary
from one study to the next: which training runs the seeds happened to give,
and which test examples the benchmark happened to contain. A model with
crossed random effects of seed and example (one observation per cell) says

  d_s = mu + a_s + mean_i (b_i + c_si),
  Var(mean_s d_s) = s_a^2 / S + s_b^2 / n + s_c^2 / (n S),

with a the seed effect, b the example effect shared by all seeds and c their
interaction. The between-seed variance of the d_s estimates
s_a^2 + s_c^2 / n, so var(d) / S covers every term but the shared-example one,
s_b^2 / n. That term is estimated from the two-way table of per-example
contributions u_si (seeds x examples; the classical ANOVA estimator of a
crossed random-effects model, e.g. Searle, Casella & McCulloch, "Variance
Components", 1992, ch. 4):

  s_b^2 = (MS_example - MS_residual) / S   (truncated at 0),

per example set (the source test split, each target domain). The standard
error is SE^2 = var(d) / S + sum over sets of s_b^2 / n, and the interval is
a Student t interval whose degrees of freedom come from Satterthwaite's
approximation (Satterthwaite, 1946): S - 1 when the seeds dominate, large
when the examples do. With the seeds' variance alone this is the per-seed t
interval on S - 1 degrees of freedom; the example term is what it adds.

Nonlinear statistics (ratios of accuracies) enter through their per-example
influence (the delta method): `u_si` is the first-order contribution of
example i to seed s's effect; the seed term always uses the exact d_s.

`tests/study/claims_calibration_test.py` and
`benchmarks/claims_calibration.py` check by simulation, with a known truth,
that intervals built this way hold their nominal level at 3 and 10 seeds and
at seed / example variance ratios from 0 to more than 20.
"""

import dataclasses
import math
from typing import List, NamedTuple, Optional, Sequence

import numpy as np
from scipy import stats as scipy_stats

CONFIDENCE = 0.95


class Estimate(NamedTuple):
  """A point estimate with a two-sided interval."""
  value: float
  lo: float
  hi: float

  @property
  def sign(self) -> int:
    """+1 if the interval lies above zero, -1 if below, 0 otherwise."""
    if self.lo > 0:
      return 1
    if self.hi < 0:
      return -1
    return 0


@dataclasses.dataclass(frozen=True)
class Effect:
  """A seed-mean effect with its variance components.

  Attributes:
    value: mean over seeds of the per-seed effects.
    seed_var: var(d_s) / S, the between-seed part of the squared SE.
    example_var: the shared test-example part of the squared SE.
    df: Satterthwaite degrees of freedom.
    num_seeds: S.
  """
  value: float
  seed_var: float
  example_var: float
  df: float
  num_seeds: int

  @property
  def se(self) -> float:
    return math.sqrt(self.seed_var + self.example_var)

  def critical(self, alpha: float) -> float:
    """Two-sided t critical value at level `alpha` (inf without df)."""
    if not self.df > 0:
      return math.inf
    return float(scipy_stats.t.ppf(1 - alpha / 2, self.df))

  def interval(self, alpha: float = 1 - CONFIDENCE) -> Estimate:
    """The two-sided (1 - alpha) interval."""
    if not np.isfinite(self.value):
      return Estimate(float("nan"), float("nan"), float("nan"))
    half = self.critical(alpha) * self.se if self.se > 0 else 0.0
    return Estimate(self.value, self.value - half, self.value + half)

  def p_value(self) -> float:
    """Two-sided p-value of 'the effect is zero'."""
    if not np.isfinite(self.value):
      return float("nan")
    if self.se == 0:
      return 1.0 if self.value == 0 else 0.0
    if not self.df > 0:
      return 1.0
    return float(2 * scipy_stats.t.sf(abs(self.value) / self.se, self.df))

  def mde(self, alpha: float, power: float = 0.8,
          num_seeds: Optional[int] = None) -> float:
    """Smallest true effect found with probability `power` at level alpha.

    Args:
      alpha: the two-sided level the verdict uses (after correction).
      power: the wanted power.
      num_seeds: for a study with this many seeds instead (the seed part of
        the variance scales as 1 / S, the example part stays).

    Returns:
      (t_{1-alpha/2} + t_{power}) * SE on the same degrees of freedom.
    """
    s = num_seeds or self.num_seeds
    seed_var = self.seed_var * self.num_seeds / s
    se = math.sqrt(seed_var + self.example_var)
    df = _satterthwaite(seed_var, s - 1, self.example_var, self._example_df)
    if not df > 0:
      return math.inf
    return float((scipy_stats.t.ppf(1 - alpha / 2, df) +
                  scipy_stats.t.ppf(power, df)) * se)

  @property
  def _example_df(self) -> float:
    # The example term's own df is large (n - 1 per set); the exact value
    # hardly matters next to the seeds' S - 1.
    return 1e6


def _satterthwaite(v1: float, df1: float, v2: float, df2: float) -> float:
  total = v1 + v2
  if total <= 0:
    return float(max(df1, 0))
  denom = (v1 * v1 / df1 if df1 > 0 else math.inf if v1 > 0 else 0.0) + \
      v2 * v2 / df2
  return total * total / denom if denom > 0 else float(df1)


def shared_example_variance(u: np.ndarray) -> float:
  """The shared-example part of Var(mean of u), from a seeds x examples table.

  Args:
    u: [S, n] per-example contributions (the effect of seed s on this example
      set is mean_i u[s, i]).

  Returns:
    max(0, MS_example - MS_residual) / (S n): the variance the sampling of
    the n examples adds to the seed-mean effect beyond what the seeds'
    spread already contains. With one seed, var(mean_i u) over examples.
  """
  u = np.asarray(u, np.float64)
  s, n = u.shape
  if n < 2:
    return 0.0
  col = u.mean(axis=0)
  if s < 2:
    return float(col.var(ddof=1) / n)
  row = u.mean(axis=1, keepdims=True)
  grand = col.mean()
  ms_ex = s * ((col - grand) ** 2).sum() / (n - 1)
  resid = u - row - col[None, :] + grand
  ms_res = (resid ** 2).sum() / ((s - 1) * (n - 1))
  return float(max(0.0, ms_ex - ms_res) / (s * n))


def effect(per_seed: np.ndarray, per_example: Sequence[np.ndarray]) -> Effect:
  """The seed-mean effect and its variance components.

  Args:
    per_seed: [S] the exact effect of each seed.
    per_example: one [S, n_k] array per example set: the first-order
      contribution of each example to each seed's effect (the effect of seed
      s moves by mean_i u[s, i] when the set's examples are resampled).

  Returns:
    An `Effect` (NaN value if any seed's effect is undefined).
  """
  d = np.asarray(per_seed, np.float64)
  s = d.size
  if s == 0 or not np.all(np.isfinite(d)):
    return Effect(float("nan"), float("nan"), float("nan"), 0.0, s)
  seed_var = float(d.var(ddof=1) / s) if s > 1 else math.inf
  example_var = float(sum(shared_example_variance(u) for u in per_example))
  df = _satterthwaite(seed_var, s - 1, example_var, 1e6) if s > 1 else 0.0
  return Effect(float(d.mean()), seed_var, example_var, df, s)


def paired_mean_difference(diff: np.ndarray,
                           confidence: float = CONFIDENCE) -> List[Estimate]:
  """Mean of per-example paired differences with t intervals over examples.

  For checks within one trained model (one seed), where the examples are
  the only source of variation.

  Args:
    diff: [examples, K] per-example differences of K paired comparisons.
    confidence: coverage of the two-sided interval.

  Returns:
    K `Estimate`s of the mean difference.
  """
  diff = np.asarray(diff, np.float64)
  if diff.ndim == 1:
    diff = diff[:, None]
  n = diff.shape[0]
  mean = diff.mean(axis=0)
  if n < 2:
    return [Estimate(float(m), -math.inf, math.inf) for m in mean]
  half = scipy_stats.t.ppf(0.5 + confidence / 2, n - 1) * diff.std(
      axis=0, ddof=1) / math.sqrt(n)
  return [Estimate(float(m), float(m - h), float(m + h))
          for m, h in zip(mean, half)]


def bonferroni(alpha: float, count: int) -> float:
  """Per-test level that keeps the family-wise error rate at `alpha`."""
  return alpha / max(1, count)
