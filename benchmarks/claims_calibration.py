"""Calibration of the claims' verdicts on simulated studies of known truth.

Run by hand (the tests run a small part of it,
tests/study/claims_calibration_test.py):

  PYTHONPATH=. python benchmarks/claims_calibration.py --replications=500 \
      --old_replications=100 --out=benchmarks/claims_calibration.json

Each replication simulates a study with claim (a)'s structure: per seed an
"original" and a "compressed" (method 'prune') model, scored on the same
examples, and runs it through `analysis.test_claims`, the function the report
uses. With `effect` = 0 the two models are exchangeable, so the true effect
is exactly 0 and any supported / contradicted verdict is a false one; with
`effect` != 0 the true effect is computed from the generating model
(`true_effects`) and the intervals' coverage is counted.

The generating model. Example sets: the source test split (`n_source`
examples; clean cell 'clean'/'source') and a separate target split ('uci',
`n_target` examples; the domain cell). Corruption cells (`CORRUPTIONS`: two
names x two levels) and adversarial cells ('fgsm' and 'pgd_linf' at eps 0 and
`EPS`) are scored on the first `n_adv` source examples. Per example i of a
set, model m, seed s and cell c of shift type T, the logit is

  mu_c + d_i + a_mi + g_ci + b_ms[clean] + b_ms[T] - effect * [m compressed]

* d_i ~ N(0, example_sd^2): the example's difficulty, shared by every model
  and seed (models agree on which images are hard);
* a_mi ~ N(0, interaction_sd^2): model x example interaction, per model and
  example set, shared by the model's seeds and cells (e.g. pruning hurts some
  images more than others);
* g_ci ~ N(0, CELL_SD^2): what a shifted cell does to example i, shared by
  every model and seed (0 for clean and domain cells);
* b_ms[clean], b_ms[T] ~ N(0, seed_sd^2): the training seed's effect on the
  model, per model, seed and shift type (the clean one enters every cell);
  `seed_sd` may be a mapping from 'clean' and each shift type to its sd;
* mu_c: the cell's offset (`MU_CLEAN`, `MU_DOMAIN`, `CORRUPTIONS`,
  `MU_FGSM`, `PGD_GAP`); clean and eps = 0 cells carry no effect.

The example is correct with probability 1/K + (1 - 1/K) sigmoid(logit) (a
model at chance still gets 1/K right), drawn with one uniform per (model,
seed, example) shared by all cells of the example set, so a model's errors
under a shift fall mostly on the images it already gets wrong clean, as real
evaluations' do. With `paired_draws` the compressed model also shares its
original's uniforms (it inherits the original's luck on each image, as a
model compressed from it does). PGD's logit is FGSM's minus `PGD_GAP`
with the same g, so PGD's correct set is inside FGSM's and the worst case
over attacks (what the claims use) is PGD. The eps = 0 rows are the clean
correctness of the first `n_adv` examples (eps = 0 is not a shift).

Truth. With G(x, sd) = E[sigmoid(x + sd Z)], Z ~ N(0, 1), a model's
chance-corrected R on an infinite example pool is, per seed,
  R = mean_c G(mu_c + b[clean] + b[T] - effect, sd_c) / G(MU_CLEAN + b[clean],
      sd_0),
with sd_0^2 = example_sd^2 + interaction_sd^2 and sd_c^2 = sd_0^2 + CELL_SD^2
for corruption and adversarial cells (accuracy - 1/K = (1 - 1/K) G, so the
(1 - 1/K) cancels). The estimand of claim (a) per shift type, E over seeds of
R(original) - R(compressed), is then an integral over the two seed effects of
each model: `true_effects` computes it with Gauss-Hermite quadrature (the
example integral G and the seed integrals alike), and
`monte_carlo_truth` checks it the literal way, on huge example pools and many
simulated seeds.

Seed / example variance ratio. The seed-mean effect's sampling variance has
a seed part (the spread of the per-seed effects on an infinite pool, / S)
and an example part (which examples the study happened to score, and the
Bernoulli draws). `simulate_with_truth` returns both the finite-sample and
the infinite-pool per-seed R, so the two parts are measured per
configuration over the replications: V_seed = var(population seed-mean
effect), V_ex = var(estimate - population seed-mean effect), ratio =
V_seed / V_ex (reported per shift type). `seed_sd_for_ratio` picks per shift
type the seed sd that gives a target ratio (V_seed by quadrature, V_ex from
a pilot simulation without seed effects).

Two worlds (`WORLDS`): "independent" (each model its own Bernoulli draws,
interaction sd 0.3: most of the example-level variance changes from seed to
seed) and "paired" (`paired_draws`, interaction sd 0.5: most of it is shared
by all seeds, the part only the interval's ANOVA term covers). Reported per
setting (`settings`: independent world, S in {3, 10} x ratio in {0, 1, 4,
24}; paired world, S in {3, 10} x ratio in {0, 24}; each with effect 0 and
`EFFECT`): effect 0: the false-verdict rate of the comparison's uncorrected
95 % interval, of the primary cells' family-corrected intervals, of claim
(a)'s verdict and of the negative control (a 'replicate' model); effect !=
0: coverage of both intervals, power (verdict 'supported') and the ratio of
the mean estimated SE to the estimate's actual error; Monte-Carlo standard
errors throughout; and the example part's share of the estimated squared
standard error (the part the interval puts at the normal quantile; the seed
part gets t on S - 1 degrees of freedom). (The "what if df = S - 1"
columns, written when the interval took Satterthwaite degrees of freedom,
are gone; that method's numbers are kept in the results file's log.) The
"before" column runs the percentile bootstrap of the claims module as of
commit `OLD_COMMIT` (`robustjax/study/claims.py` and its neighbours,
written from git into a temporary directory) on the first studies of the
same replications, where this checkout's history has that commit. Its R is shifted / clean (no
chance correction); with effect 0 its truth is 0 all the same.
"""

import dataclasses
import functools
import importlib
import json
import math
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time
import zlib
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

from absl import app
from absl import flags
import numpy as np

from robustjax.study.claims import analysis
from robustjax.study import runner
from robustjax.study.claims import data as claims_data

NUM_CLASSES = 10
ORIGINAL, COMPRESSED, REPLICATE = "s/original", "s/prune", "s/replicate"
SHIFT_TYPES = ("domain", "corruption", "adversarial")
MU_CLEAN = 2.5
MU_DOMAIN = 1.0
DOMAIN = "uci"
CORRUPTIONS = (("fog", ((1, 1.6), (3, 0.6))),
               ("noise", ((1, 1.2), (3, 0.2))))  # name, ((level, mu), ...)
MU_FGSM = -0.2
PGD_GAP = 0.6
EPS = 0.05
CELL_SD = 0.5
# Example counts of the simulated study (a small study's: attacks and
# corruptions on the first few hundred source test images).
N_SOURCE, N_TARGET, N_ADV = 1000, 600, 300
EXAMPLE_SD, INTERACTION_SD = 1.0, 0.3
OLD_COMMIT = "27ac628"
_GH_NODES = 64

SeedSd = Union[float, Mapping[str, float]]


def _sds(seed_sd: SeedSd) -> Dict[str, float]:
  if isinstance(seed_sd, Mapping):
    return {k: float(seed_sd.get(k, 0.0)) for k in ("clean",) + SHIFT_TYPES}
  return {k: float(seed_sd) for k in ("clean",) + SHIFT_TYPES}


def _sigmoid(x):
  return 0.5 * (1.0 + np.tanh(0.5 * x))


def _cells(shift: str):
  """[(cell name, mu, per-example cell term?)] of one shift type's R."""
  if shift == "domain":
    return [(DOMAIN, MU_DOMAIN, False)]
  if shift == "corruption":
    return [(f"{nm}{lv}", mu, True) for nm, lv_mu in CORRUPTIONS
            for lv, mu in lv_mu]
  return [("pgd_linf", MU_FGSM - PGD_GAP, True)]  # The worst case.


@dataclasses.dataclass
class Draw:
  """One simulated study and what is known about it.

  Attributes:
    models: the `make_study_data` input.
    sample_r: (model_id, shift type) -> [S] chance-corrected R per seed on
      the simulated examples (what the claims estimate).
    population_r: the same on an infinite example pool (given the drawn seed
      effects).
  """
  models: Dict[str, dict]
  sample_r: Dict[Tuple[str, str], np.ndarray]
  population_r: Dict[Tuple[str, str], np.ndarray]

  def effects(self, which: str = "sample") -> Dict[str, np.ndarray]:
    """Shift type -> per-seed R(original) - R(compressed), [S]."""
    r = self.sample_r if which == "sample" else self.population_r
    return {t: r[(ORIGINAL, t)] - r[(COMPRESSED, t)] for t in SHIFT_TYPES}


@functools.lru_cache(maxsize=None)
def _gauss_hermite(n: int = _GH_NODES):
  """Nodes and weights for E[f(Z)], Z ~ N(0, 1)."""
  x, w = np.polynomial.hermite_e.hermegauss(n)
  return x, w / w.sum()


def expected_sigmoid(x, sd: float) -> np.ndarray:
  """G(x, sd) = E[sigmoid(x + sd Z)], elementwise (Gauss-Hermite)."""
  z, w = _gauss_hermite()
  x = np.asarray(x, np.float64)
  return _sigmoid(x[..., None] + sd * z) @ w


def _population_r(shift, b_clean, b_shift, effect, example_sd,
                  interaction_sd):
  """R on an infinite pool for seed effects b_clean, b_shift (broadcast)."""
  sd0 = math.hypot(example_sd, interaction_sd)
  sdc = math.hypot(sd0, CELL_SD)
  num = np.mean([expected_sigmoid(mu + b_clean + b_shift - effect,
                                  sdc if cell else sd0)
                 for _, mu, cell in _cells(shift)], axis=0)
  return num / expected_sigmoid(MU_CLEAN + b_clean, sd0)


def _model_draw(rng, *, name, seeds, sds, effect, floor, d_src, d_tgt, g,
                u_src, u_tgt, n_adv, example_sd, interaction_sd):
  """One model's cells, and its per-seed R on the sample and the pool."""
  a_src = rng.normal(0.0, interaction_sd, d_src.size)
  a_tgt = rng.normal(0.0, interaction_sd, d_tgt.size)
  cells = {}
  sample = {t: [] for t in SHIFT_TYPES}
  population = {}

  def correct(logit, u):
    return u < floor + (1.0 - floor) * _sigmoid(logit)

  seed_effects = []
  for s in range(seeds):
    b = {k: rng.normal(0.0, sd) if sd > 0 else 0.0 for k, sd in sds.items()}
    seed_effects.append(b)
    base = d_src + a_src + b["clean"]
    clean = correct(MU_CLEAN + base, u_src[s])
    cells[(s, "clean", "source")] = {None: clean}
    target = correct(MU_DOMAIN + d_tgt + a_tgt + b["clean"] + b["domain"] -
                     effect, u_tgt[s])
    cells[(s, "domain", DOMAIN)] = {None: target}
    head, u_head = base[:n_adv], u_src[s, :n_adv]
    corrupted = []
    for nm, lv_mu in CORRUPTIONS:
      levels = {lv: correct(mu + head + g[f"{nm}{lv}"] + b["corruption"] -
                            effect, u_head) for lv, mu in lv_mu}
      corrupted += list(levels.values())
      cells[(s, "corruption", nm)] = levels
    attacked = {}
    for nm, mu in (("fgsm", MU_FGSM), ("pgd_linf", MU_FGSM - PGD_GAP)):
      attacked[nm] = correct(mu + head + g[nm] + b["adversarial"] - effect,
                             u_head)
      cells[(s, "adversarial", nm)] = {0.0: clean[:n_adv], EPS: attacked[nm]}
    worst = attacked["fgsm"] & attacked["pgd_linf"]
    clean_head = clean[:n_adv].mean()
    for t, shifted, ref in (
        ("domain", target.mean(), clean.mean()),
        ("corruption", np.mean([c.mean() for c in corrupted]), clean_head),
        ("adversarial", worst.mean(), clean_head)):
      sample[t].append((shifted - floor) / (ref - floor))
  bs = {k: np.array([b[k] for b in seed_effects]) for k in sds}
  for t in SHIFT_TYPES:
    population[t] = _population_r(t, bs["clean"], bs[t], effect, example_sd,
                                  interaction_sd)
  head = dict(arch="s", method="original", size_bits=1e6, original_id=None,
              setting={}, sparsity=0.0)
  if name == COMPRESSED:
    head.update(method="prune", size_bits=3e5, original_id=ORIGINAL,
                setting={"sparsity": 0.7}, sparsity=0.7)
  elif name == REPLICATE:
    head.update(method="replicate", original_id=ORIGINAL)
  return (dict(head, cells=cells),
          {t: np.array(v) for t, v in sample.items()},
          {t: np.array(v) for t, v in population.items()})


def simulate_with_truth(rng: np.random.Generator, *, seeds: int,
                        n_source: int = N_SOURCE, n_target: int = N_TARGET,
                        n_adv: int = N_ADV, seed_sd: SeedSd = 0.0,
                        example_sd: float = EXAMPLE_SD,
                        interaction_sd: float = INTERACTION_SD,
                        effect: float = 0.0,
                        num_classes: int = NUM_CLASSES,
                        paired_draws: bool = False,
                        replicate: bool = False) -> Draw:
  """Draws one study, with what is known about it (arguments: `simulate`).

  Args:
    rng: see `simulate`.
    seeds: see `simulate`.
    n_source: see `simulate`.
    n_target: see `simulate`.
    n_adv: see `simulate`.
    seed_sd: see `simulate`.
    example_sd: see `simulate`.
    interaction_sd: see `simulate`.
    effect: see `simulate`.
    num_classes: see `simulate`.
    paired_draws: the compressed model shares its original's uniforms per
      seed and example (it inherits the original's luck on each image, as a
      model compressed from it does), which leaves more of the example-level
      variance in the part shared by all seeds; default: its own draws.
    replicate: add a third model, method 'replicate' (the negative control:
      an independent copy of the original, true effect 0), drawn after the
      other two so that their draws do not depend on it.

  Returns:
    A `Draw`.
  """
  sds = _sds(seed_sd)
  d_src = rng.normal(0.0, example_sd, n_source)
  d_tgt = rng.normal(0.0, example_sd, n_target)
  g = {nm: rng.normal(0.0, CELL_SD, n_adv)
       for t in ("corruption", "adversarial") for nm, _, _ in _cells(t)}
  g["fgsm"] = g["pgd_linf"]
  names = (ORIGINAL, COMPRESSED) + ((REPLICATE,) if replicate else ())
  models, sample_r, population_r = {}, {}, {}
  for name in names:
    if name == ORIGINAL or name == REPLICATE or not paired_draws:
      u_src = rng.random((seeds, n_source))
      u_tgt = rng.random((seeds, n_target))
    models[name], sample, population = _model_draw(
        rng, name=name, seeds=seeds, sds=sds,
        effect=effect if name == COMPRESSED else 0.0,
        floor=1.0 / num_classes, d_src=d_src, d_tgt=d_tgt, g=g,
        u_src=u_src, u_tgt=u_tgt, n_adv=n_adv, example_sd=example_sd,
        interaction_sd=interaction_sd)
    for t in SHIFT_TYPES:
      sample_r[(name, t)] = sample[t]
      population_r[(name, t)] = population[t]
  return Draw(models, sample_r, population_r)


def simulate(rng: np.random.Generator, *, seeds: int,
             n_source: int = N_SOURCE, n_target: int = N_TARGET,
             n_adv: int = N_ADV, seed_sd: SeedSd = 0.0,
             example_sd: float = EXAMPLE_SD,
             interaction_sd: float = INTERACTION_SD, effect: float = 0.0,
             num_classes: int = NUM_CLASSES):
  """One simulated study as the claims' `StudyData` (model: the docstring).

  Args:
    rng: the random generator (the same state gives the same study).
    seeds: number of training seeds S.
    n_source: source test examples (the clean cell).
    n_target: target examples (the domain cell 'uci').
    n_adv: the first source examples the corruption and adversarial cells
      are scored on.
    seed_sd: sd of the seed-level model effects (a float, or a mapping from
      'clean' and each shift type to its sd).
    example_sd: sd of the example difficulty shared by all models.
    interaction_sd: sd of the model x example interaction.
    effect: logit shift of the compressed model's shifted cells (positive:
      it loses robustness); 0 makes the two models exchangeable.
    num_classes: K (chance accuracy 1/K).

  Returns:
    `robustjax.study.claims.data.StudyData`.
  """
  draw = simulate_with_truth(
      rng, seeds=seeds, n_source=n_source, n_target=n_target, n_adv=n_adv,
      seed_sd=seed_sd, example_sd=example_sd, interaction_sd=interaction_sd,
      effect=effect, num_classes=num_classes)
  return claims_data.make_study_data(draw.models)


# Truth.


def true_effects(*, seed_sd: SeedSd, effect: float,
                 example_sd: float = EXAMPLE_SD,
                 interaction_sd: float = INTERACTION_SD) -> Dict[str, float]:
  """Shift type -> E over seeds of R(original) - R(compressed), exact.

  The expectation over the two seed effects (b[clean], b[T], independent
  normals) by Gauss-Hermite quadrature on a product grid; R on an infinite
  example pool by `expected_sigmoid`. Exactly 0 when `effect` is 0.
  """
  sds = _sds(seed_sd)
  z, w = _gauss_hermite()
  out = {}
  for t in SHIFT_TYPES:
    bc = sds["clean"] * z[:, None]
    bt = sds[t] * z[None, :]
    ww = w[:, None] * w[None, :]
    r0 = _population_r(t, bc, bt, 0.0, example_sd, interaction_sd)
    r1 = _population_r(t, bc, bt, effect, example_sd, interaction_sd)
    out[t] = float(np.sum(ww * (r0 - r1)))
  return out


def monte_carlo_truth(rng: np.random.Generator, *, seed_sd: SeedSd,
                      effect: float, example_sd: float = EXAMPLE_SD,
                      interaction_sd: float = INTERACTION_SD,
                      num_seeds: int = 4000, pool: int = 20000
                      ) -> Dict[str, Tuple[float, float]]:
  """`true_effects` the literal way: huge example pools, many seeds.

  Per simulated seed: fresh seed effects and a fresh pool of `pool` source
  and `pool` target examples (difficulty plus interaction drawn as one
  normal of their combined sd, cell terms as in `simulate`). A model's
  accuracy on the pool is the mean of its correctness probabilities (the
  Bernoulli draws' expectation, which only removes noise), so its
  chance-corrected R is the ratio of its mean sigmoids. The effect is the
  mean over `num_seeds` seeds of R(original) - R(compressed); the two models
  are given the same seed effects and pool (common random numbers: the
  expectation of the difference is the same, its Monte-Carlo error much
  smaller).

  Returns:
    Shift type -> (estimate, Monte-Carlo standard error).
  """
  sds = _sds(seed_sd)
  sd0 = math.hypot(example_sd, interaction_sd)
  diffs = {t: [] for t in SHIFT_TYPES}
  for _ in range(num_seeds):
    b = {k: rng.normal(0.0, sd) for k, sd in sds.items()}
    base = rng.normal(0.0, sd0, pool) + b["clean"]
    clean = _sigmoid(MU_CLEAN + base).mean()
    for t in SHIFT_TYPES:
      x = (rng.normal(0.0, sd0, pool) + b["clean"] if t == "domain" else
           base)
      shifted = [mu + x + (rng.normal(0.0, CELL_SD, pool) if cell else 0.0) +
                 b[t] for _, mu, cell in _cells(t)]
      r0 = np.mean([_sigmoid(v).mean() for v in shifted]) / clean
      r1 = np.mean([_sigmoid(v - effect).mean() for v in shifted]) / clean
      diffs[t].append(r0 - r1)
  return {t: (float(np.mean(v)), float(np.std(v, ddof=1) / np.sqrt(len(v))))
          for t, v in diffs.items()}


# Seed / example variance ratio.


def variance_parts(draws: Sequence[Draw]) -> Dict[str, Dict[str, float]]:
  """Shift type -> V_seed, V_ex and their ratio, over replications.

  V_seed: variance of the seed-mean effect on an infinite pool (the seeds'
  part); V_ex: variance of the estimate minus it (the examples' part).
  """
  out = {}
  for t in SHIFT_TYPES:
    pop = np.array([d.effects("population")[t].mean() for d in draws])
    est = np.array([d.effects("sample")[t].mean() for d in draws])
    v_seed, v_ex = float(np.var(pop, ddof=1)), float(np.var(est - pop,
                                                            ddof=1))
    out[t] = dict(v_seed=v_seed, v_ex=v_ex, ratio=v_seed / v_ex)
  return out


def seed_var_per_seed(shift: str, sd_clean: float, sd_shift: float,
                      example_sd: float = EXAMPLE_SD,
                      interaction_sd: float = INTERACTION_SD) -> float:
  """Var over seeds of one seed's infinite-pool effect (effect 0)."""
  z, w = _gauss_hermite()
  r = _population_r(shift, sd_clean * z[:, None], sd_shift * z[None, :], 0.0,
                    example_sd, interaction_sd)
  ww = w[:, None] * w[None, :]
  mean = np.sum(ww * r)
  return 2.0 * float(np.sum(ww * (r - mean) ** 2))  # Two independent models.


def seed_sd_for_ratio(target: float, seeds: int, v_ex: Mapping[str, float],
                      clean_fraction: float = 0.25,
                      **kwargs) -> Dict[str, float]:
  """Per shift type, the seed sd giving V_seed / V_ex = target.

  Args:
    target: the ratio wanted.
    seeds: S.
    v_ex: shift type -> V_ex measured without seed effects.
    clean_fraction: the clean seed sd, as a fraction of the smallest shift
      sd (the clean effect enters numerator and denominator alike and mostly
      cancels; what it adds is counted in the shift sds' second pass).
    **kwargs: example_sd, interaction_sd.

  Returns:
    'clean' and shift type -> sd (bisection on the quadrature V_seed).
  """
  if target <= 0:
    return {k: 0.0 for k in ("clean",) + SHIFT_TYPES}
  out = {"clean": 0.0}
  for _ in range(2):  # Shift sds without the clean one, then with it.
    for t in SHIFT_TYPES:
      lo, hi = 0.0, 5.0
      for _ in range(50):
        mid = 0.5 * (lo + hi)
        v = seed_var_per_seed(t, out["clean"], mid, **kwargs) / seeds
        lo, hi = (mid, hi) if v < target * v_ex[t] else (lo, mid)
      out[t] = 0.5 * (lo + hi)
    out["clean"] = clean_fraction * min(out[t] for t in SHIFT_TYPES)
  return out


# Settings and their replications.

# The simulated worlds: "independent" (each model its own Bernoulli draws;
# the example-level variance is mostly per seed) and "paired" (a compressed
# model shares its original's draws and the model x example interaction is
# larger, so most of the example-level variance is shared by all seeds: the
# part that only the ANOVA term of the interval covers).
WORLDS = {
    "independent": dict(paired_draws=False, interaction_sd=INTERACTION_SD),
    "paired": dict(paired_draws=True, interaction_sd=0.5),
}
EFFECT = 0.3  # Logit shift of the compressed model, for coverage and power.
TARGET_RATIOS = (0.0, 1.0, 4.0, 24.0)
PILOT = 400  # Replications (generator only) that measure V_ex.


@dataclasses.dataclass(frozen=True)
class Setting:
  """One line of the table."""
  world: str
  seeds: int
  target_ratio: float
  effect: float

  @property
  def name(self) -> str:
    return (f"{self.world}/S={self.seeds}/ratio={self.target_ratio:g}/"
            f"effect={self.effect:g}")


def _rng(*parts) -> np.random.Generator:
  """A generator seeded from a stable description (same parts, same draws)."""
  entropy = [zlib.crc32(repr(p).encode()) for p in parts]
  return np.random.default_rng(np.random.SeedSequence(entropy))


@functools.lru_cache(maxsize=None)
def pilot_v_ex(world: str, seeds: int, replications: int = PILOT
               ) -> Dict[str, float]:
  """Shift type -> V_ex of a world without seed effects (a pilot run)."""
  rng = _rng("pilot", world, seeds, replications)
  draws = [simulate_with_truth(rng, seeds=seeds, **WORLDS[world])
           for _ in range(replications)]
  return {t: v["v_ex"] for t, v in variance_parts(draws).items()}


def setting_seed_sd(setting: Setting) -> Dict[str, float]:
  """The seed sds that give the setting's target ratio (`seed_sd_for_ratio`).
  """
  kw = dict(interaction_sd=WORLDS[setting.world]["interaction_sd"])
  return seed_sd_for_ratio(setting.target_ratio, setting.seeds,
                           pilot_v_ex(setting.world, setting.seeds), **kw)


def _excludes_zero(est) -> bool:
  return bool(est.lo > 0 or est.hi < 0)


def _covers(est, truth: float) -> bool:
  return bool(est.lo <= truth <= est.hi)


def replicate_once(study, options) -> dict:
  """What one replication's `test_claims` said about claim (a).

  Args:
    study: the simulated `StudyData`.
    options: `analysis.Options`.

  Returns:
    verdict (claim (a)'s overall verdict), and per shift type: the main
    analysis' comparison interval (uncorrected) and cell (interval at its
    corrected level, verdict, level, SE, variance components); the
    negative control's comparisons where the study has a replicate.
  """
  res = analysis.test_claims(study, options)
  a = res.verdicts[0]
  main = next(c.analysis for c in a.cells if c.in_verdict)
  out = dict(verdict=a.verdict, excluded=[e.model_id for e in res.excluded],
             comparison={}, cell={}, control={})
  for c in a.comparisons:
    if c.analysis == main:
      out["comparison"][c.shift] = c.effect
  for c in a.cells:
    if c.analysis == main and c.effect is not None:
      (e,) = c.components.values()
      out["cell"][c.shift] = dict(effect=c.effect, verdict=c.verdict,
                                  alpha=c.alpha, se=e.se,
                                  in_verdict=c.in_verdict,
                                  components=(e.value, e.seed_var,
                                              e.example_var, e.num_seeds))
  for c in res.control_comparisons:
    out["control"][c.shift] = c.effect
  return out


def _rate(hits: Sequence[bool]) -> Dict[str, float]:
  """Rate and its Monte-Carlo standard error (binomial)."""
  x = np.asarray(hits, np.float64)
  p = float(x.mean()) if x.size else float("nan")
  return dict(rate=p, se=float(np.sqrt(p * (1 - p) / x.size)) if x.size
              else float("nan"), count=int(x.sum()), n=int(x.size))


def _pooled_rate(rows: Sequence[Sequence[bool]]) -> Dict[str, float]:
  """Rate over replications x shift types; SE clustered by replication."""
  x = np.asarray(rows, np.float64)  # [replications, shifts]
  per_rep = x.mean(axis=1)
  return dict(rate=float(per_rep.mean()),
              se=float(per_rep.std(ddof=1) / np.sqrt(per_rep.size)),
              count=int(x.sum()), n=int(x.size))


def run_setting(setting: Setting, replications: int, *,
                old_replications: int = 0, old_module=None,
                old_bootstrap: int = 1000, replicate: bool = True) -> dict:
  """Runs one setting's replications and summarizes them.

  Args:
    setting: the world, S, target ratio and effect.
    replications: replications through the new `analysis.test_claims`.
    old_replications: the first this many also go through the old bootstrap
      (`old_module`, effect 0 only).
    old_module: the old `claims` module (`old_claims`), or None.
    old_bootstrap: the old bootstrap's replicates B.
    replicate: add the negative control's replicate model.

  Returns:
    A JSON-able summary: rates with Monte-Carlo SEs, the measured variance
    ratio, the truth, and run times.
  """
  options = analysis.Options(num_classes=NUM_CLASSES)
  sd = setting_seed_sd(setting)
  world = WORLDS[setting.world]
  truth = true_effects(seed_sd=sd, effect=setting.effect,
                       interaction_sd=world["interaction_sd"])
  rng = _rng("replications", setting.name)
  draws, outs, old = [], [], []
  t0 = time.time()
  t_old = 0.0
  for i in range(replications):
    draw = simulate_with_truth(rng, seeds=setting.seeds, seed_sd=sd,
                               effect=setting.effect, replicate=replicate,
                               **world)
    study = claims_data.make_study_data(draw.models)
    out = replicate_once(study, options)
    est = draw.effects("sample")
    for t, e in out["comparison"].items():
      if abs(e.value - est[t].mean()) > 1e-9:
        raise AssertionError(
            f"{setting.name} #{i}: test_claims' {t} effect {e.value} is not "
            f"the simulation's mean per-seed R difference {est[t].mean()}.")
    draws.append(draw)
    outs.append(out)
    if i < old_replications and old_module is not None and \
        setting.effect == 0:
      t1 = time.time()
      v = old_module.test_claims(old_module.make_study_data(
          {k: m for k, m in draw.models.items() if k != REPLICATE}), seed=i,
                                 num_replicates=old_bootstrap)[0]
      by = {r.shift: r.verdict for r in v.results if r.in_verdict}
      old.append(([by[t] in ("supported", "contradicted")
                   for t in SHIFT_TYPES], v.verdict))
      t_old += time.time() - t1
  seconds = time.time() - t0 - t_old
  return summarize(setting, sd, truth, draws, outs, old, seconds, t_old,
                   old_bootstrap)


def summarize(setting, sd, truth, draws, outs, old, seconds, old_seconds,
              old_bootstrap) -> dict:
  """The JSON-able summary of one setting (see `run_setting`)."""
  shifts = [t for t in SHIFT_TYPES if any(t in o["comparison"] for o in outs)]
  # A replication whose compressed model was left out (clean accuracy more
  # than max_clean_drop below its original's) has no comparison: it is
  # counted in `excluded` and left out of the comparison and cell rates.
  full = [o for o in outs if all(t in o["comparison"] for t in shifts)]
  parts = variance_parts(draws)
  res = dict(setting=dataclasses.asdict(setting), name=setting.name,
             replications=len(outs), seed_sd=sd, truth=truth,
             ratio={t: parts[t]["ratio"] for t in SHIFT_TYPES},
             v_seed={t: parts[t]["v_seed"] for t in SHIFT_TYPES},
             v_ex={t: parts[t]["v_ex"] for t in SHIFT_TYPES},
             seconds=seconds,
             excluded=sum(bool(o["excluded"]) for o in outs))
  comp = {t: [o["comparison"][t] for o in full] for t in shifts}
  cell = {t: [o["cell"][t] for o in full] for t in shifts}
  est = {t: np.array([e.value for e in comp[t]]) for t in shifts}
  # Calibration of the standard error itself: the mean estimated SE over the
  # empirical sd of the estimate around the truth.
  res["se_ratio"] = {t: float(np.sqrt(np.mean([c["se"] ** 2 for c in cell[t]]))
                              / np.sqrt(np.mean((est[t] - truth[t]) ** 2)))
                     for t in shifts}
  res["cell_alpha"] = {t: cell[t][0]["alpha"] for t in shifts}
  res["primary"] = [t for t in shifts if cell[t][0]["in_verdict"]]
  # The example part's share of the estimated squared SE, averaged over the
  # replications (the seed part is at t on S - 1 df, the example part at z).
  res["example_share"] = {
      t: float(np.mean([c["components"][2] /
                        max(c["components"][1] + c["components"][2], 1e-300)
                        for c in cell[t]])) for t in shifts}
  decided = [o["verdict"] not in ("inconclusive", "not testable")
             for o in outs]
  if setting.effect == 0:
    miss = {t: [_excludes_zero(e) for e in comp[t]] for t in shifts}
    res["comparison_false"] = {t: _rate(v) for t, v in miss.items()}
    res["comparison_false"]["pooled"] = _pooled_rate(
        list(zip(*miss.values())))
    res["cell_false"] = {t: _rate([_excludes_zero(c["effect"])
                                   for c in cell[t]]) for t in shifts}
    res["claim_false"] = _rate(decided)
  else:
    cover = {t: [_covers(e, truth[t]) for e in comp[t]] for t in shifts}
    res["comparison_coverage"] = {t: _rate(v) for t, v in cover.items()}
    res["comparison_coverage"]["pooled"] = _pooled_rate(
        list(zip(*cover.values())))
    res["cell_coverage"] = {t: _rate([_covers(c["effect"], truth[t])
                                      for c in cell[t]]) for t in shifts}
    res["cell_power"] = {t: _rate([c["verdict"] == "supported"
                                   for c in cell[t]]) for t in shifts}
    res["claim_power"] = _rate([o["verdict"] == "supported" for o in outs])
    res["claim_wrong_sign"] = _rate([o["verdict"] in ("contradicted", "mixed")
                                     for o in outs])
  if all(o["control"] for o in full):
    miss = {t: [_excludes_zero(o["control"][t]) for o in full]
            for t in shifts}
    res["control_false"] = _pooled_rate(list(zip(*miss.values())))
  if old:
    res["old_bootstrap"] = dict(
        replications=len(old), num_replicates=old_bootstrap,
        seconds=old_seconds,
        shift_false={t: _rate([o[0][i] for o in old])
                     for i, t in enumerate(SHIFT_TYPES)},
        pooled_false=_pooled_rate([o[0] for o in old]),
        claim_false=_rate([o[1] not in ("inconclusive", "not testable")
                           for o in old]))
  return res


def old_claims(commit: str = OLD_COMMIT):
  """The bootstrap claims module as of `commit`, or None where git lacks it.

  Its five modules are written from git into a temporary directory as the
  package `robustjax_old.study` (imports rewritten to it) and imported.
  """
  root = pathlib.Path(__file__).resolve().parents[1]
  tmp = pathlib.Path(tempfile.mkdtemp(prefix="claims_old_"))
  pkg = tmp / "robustjax_old" / "study"
  pkg.mkdir(parents=True)
  for init in (tmp / "robustjax_old", pkg):
    (init / "__init__.py").write_text("")
  for name in ("claims", "claims_data", "claims_report", "comparisons",
               "stats"):
    try:
      src = subprocess.run(
          ["git", "-C", str(root), "show",
           f"{commit}:robustjax/study/{name}.py"],
          check=True, capture_output=True, text=True).stdout
    except (subprocess.CalledProcessError, FileNotFoundError):
      return None
    (pkg / f"{name}.py").write_text(src.replace(
        "from robustjax.study import", "from robustjax_old.study import"))
  sys.path.insert(0, str(tmp))
  return importlib.import_module("robustjax_old.study.claims")


def settings() -> list:
  """The full table's settings."""
  out = []
  for s in (3, 10):
    for ratio in TARGET_RATIOS:
      for effect in (0.0, EFFECT):
        out.append(Setting("independent", s, ratio, effect))
  for s in (3, 10):
    for ratio in (0.0, TARGET_RATIOS[-1]):
      for effect in (0.0, EFFECT):
        out.append(Setting("paired", s, ratio, effect))
  return out


# The table.


def _pct(r: Optional[dict]) -> str:
  if not r:
    return "-"
  return f"{100 * r['rate']:.1f} ± {100 * r['se']:.1f}"


def _ratios(res) -> str:
  return " / ".join(f"{res['ratio'][t]:.1f}" for t in SHIFT_TYPES)


def _shares(res) -> str:
  return " / ".join(f"{100 * res['example_share'][t]:.0f}"
                    for t in SHIFT_TYPES)


def markdown(results: Sequence[dict]) -> str:
  """The two tables (effect 0; effect != 0) as Markdown."""
  lines = [
      "Effect 0 (false-verdict rates, % ± Monte-Carlo SE; nominal: "
      "comparison 5 %, cell its corrected level, claim <= 5 %):", "",
      "| world | S | ratio dom / cor / adv | comparison, pooled | "
      "comparison dom / cor / adv | primary cells dom / adv (nominal 2.5) | "
      "claim (a) | control, pooled | example part of SE², % dom / cor / adv "
      "| old bootstrap: shift, pooled | old bootstrap: claim |",
      "|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in results:
    if r["setting"]["effect"] != 0:
      continue
    c = r["comparison_false"]
    old = r.get("old_bootstrap")
    lines.append(
        f"| {r['setting']['world']} | {r['setting']['seeds']} | "
        f"{_ratios(r)} | {_pct(c['pooled'])} | "
        + " / ".join(f"{100 * c[t]['rate']:.1f}" for t in SHIFT_TYPES) +
        " | " + " / ".join(f"{100 * r['cell_false'][t]['rate']:.1f}"
                           for t in r["primary"]) +
        f" | {_pct(r['claim_false'])} | {_pct(r.get('control_false'))} | "
        f"{_shares(r)} | "
        f"{_pct(old['pooled_false']) if old else '-'} | "
        f"{_pct(old['claim_false']) if old else '-'} |")
  lines += [
      "", f"Effect != 0 (compressed model's logits - {EFFECT:g}; coverage "
      "and power, % ± Monte-Carlo SE):", "",
      "| world | S | ratio dom / cor / adv | true effect dom / cor / adv | "
      "coverage, 95 % comparison, pooled | comparison dom / cor / adv | "
      "primary cells dom / adv (nominal 97.5) | power: claim (a) | "
      "power: cells dom / adv | SE ratio dom / cor / adv | "
      "example part of SE², % dom / cor / adv |",
      "|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in results:
    if r["setting"]["effect"] == 0:
      continue
    c = r["comparison_coverage"]
    lines.append(
        f"| {r['setting']['world']} | {r['setting']['seeds']} | "
        f"{_ratios(r)} | " +
        " / ".join(f"{r['truth'][t]:.3f}" for t in SHIFT_TYPES) +
        f" | {_pct(c['pooled'])} | " +
        " / ".join(f"{100 * c[t]['rate']:.1f}" for t in SHIFT_TYPES) +
        " | " + " / ".join(f"{100 * r['cell_coverage'][t]['rate']:.1f}"
                           for t in r["primary"]) +
        f" | {_pct(r['claim_power'])} | " +
        " / ".join(f"{100 * r['cell_power'][t]['rate']:.0f}"
                   for t in r["primary"]) + " | " +
        " / ".join(f"{r['se_ratio'][t]:.2f}" for t in SHIFT_TYPES) +
        f" | {_shares(r)} |")
  return "\n".join(lines)


FLAGS = flags.FLAGS


def define_flags():
  """The script's flags (defined on running it, not on importing it)."""
  flags.DEFINE_integer("replications", 400,
                       "Replications per setting (new inference).")
  flags.DEFINE_integer(
      "old_replications", 100, "Of those, how many also go through the old "
      "bootstrap (effect-0 settings of the independent world; 0: none).")
  flags.DEFINE_integer("old_bootstrap", 1000,
                       "The old bootstrap's replicates B.")
  flags.DEFINE_string("out", "", "JSON file for the results.")
  flags.DEFINE_string("only", "",
                      "Run only the settings whose name contains this.")


def main(argv):
  del argv
  old = old_claims() if FLAGS.old_replications > 0 else None
  if FLAGS.old_replications > 0 and old is None:
    print(f"The old bootstrap (commit {OLD_COMMIT}) is not in this "
          "checkout's git history: no 'before' column.")
  t0 = time.time()
  results = []
  for setting in settings():
    if FLAGS.only and FLAGS.only not in setting.name:
      continue
    n_old = (FLAGS.old_replications if setting.world == "independent"
             else 0)
    r = run_setting(setting, FLAGS.replications, old_replications=n_old,
                    old_module=old, old_bootstrap=FLAGS.old_bootstrap)
    results.append(r)
    print(f"{setting.name}: {r['seconds']:.1f} s"
          + (f" (+ old bootstrap {r['old_bootstrap']['seconds']:.1f} s)"
             if "old_bootstrap" in r else ""), flush=True)
  table = markdown(results)
  print(table)
  if FLAGS.out:
    record = dict(
        command=" ".join(sys.argv), replications=FLAGS.replications,
        old_replications=FLAGS.old_replications if old else 0,
        old_bootstrap=FLAGS.old_bootstrap, old_commit=OLD_COMMIT,
        seconds=time.time() - t0,
        date=time.strftime("%Y-%m-%d %H:%M:%S %z"),
        machine=dict(platform=platform.platform(), cpus=os.cpu_count(),
                     processor=runner.environment()["machine"],
                     load_after=os.getloadavg()),
        code=runner.code_version(), constants=_constants(), results=results,
        table=table)
    with open(FLAGS.out, "w") as f:
      json.dump(record, f, indent=1, default=_json_default)
      f.write("\n")


def _json_default(x):
  if isinstance(x, tuple) and hasattr(x, "_asdict"):
    return x._asdict()
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  raise TypeError(type(x).__name__)


def _constants() -> dict:
  return dict(num_classes=NUM_CLASSES, mu_clean=MU_CLEAN, mu_domain=MU_DOMAIN,
              corruptions=CORRUPTIONS, mu_fgsm=MU_FGSM, pgd_gap=PGD_GAP,
              eps=EPS, cell_sd=CELL_SD, n_source=N_SOURCE, n_target=N_TARGET,
              n_adv=N_ADV, example_sd=EXAMPLE_SD, worlds=WORLDS,
              effect=EFFECT, target_ratios=TARGET_RATIOS, pilot=PILOT)


if __name__ == "__main__":
  define_flags()
  app.run(main)
