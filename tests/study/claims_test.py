"""The claims and their statistics on hand-made per-example data.

Each model's correctness is drawn from a latent difficulty per example that
every model shares (example i is correct iff u_i < accuracy), as real models
agree on which images are hard; `independent=True` gives a model its own
draws instead, i.e. pure noise relative to the others.
"""

import zlib

from absl.testing import absltest
import numpy as np

from robustjax.study import claims
from robustjax.study import stats

N_CLEAN, N_TARGET, N_SHIFT = 400, 300, 200
SEEDS = (0, 1, 2)
B = 500  # bootstrap replicates: enough for these effects, fast in tests.


def _latent(seed, shift, name, n):
  rng = np.random.default_rng(zlib.crc32(repr((seed, shift, name)).encode()))
  return rng.random(n)


def _model(arch, method, size_bits, clean, domain=None, corruption=None,
           adversarial=None, original_id=None, setting=None, seeds=SEEDS,
           independent=False, rng_seed=0):
  """A model whose accuracy per shift type is roughly the given value.

  Args:
    arch, method, size_bits, original_id, setting: the row fields.
    clean: clean accuracy.
    domain, corruption, adversarial: accuracy under each shift type (None:
      not evaluated); adversarial is {attack: accuracy at eps 0.1}.
    seeds: seeds the model was run with.
    independent: draw this model's correctness independently of the others.
    rng_seed: seed of the independent draws.

  Returns:
    The model dict for `claims.make_study_data`.
  """
  rng = np.random.default_rng(rng_seed)
  draw = ((lambda s, sh, nm, n: rng.random(n)) if independent else _latent)
  cells = {}
  for s in seeds:
    u = draw(s, "clean", "source", N_CLEAN)
    cells[(s, "clean", "source")] = {None: u < clean}
    if domain is not None:
      cells[(s, "domain", "target")] = {
          None: draw(s, "domain", "target", N_TARGET) < domain}
    if corruption is not None:
      cells[(s, "corruption", "fog")] = {
          lv: draw(s, "corruption", f"fog{lv}", N_SHIFT) < corruption
          for lv in (1, 3)}
    for attack, acc in (adversarial or {}).items():
      cells[(s, "adversarial", attack)] = {
          0.0: u[:N_SHIFT] < clean,
          0.1: draw(s, "adversarial", attack, N_SHIFT) < acc}
  return dict(arch=arch, method=method, size_bits=size_bits,
              original_id=original_id, setting=setting or {}, cells=cells)


def _shifts(acc, adv=None):
  return dict(domain=acc, corruption=acc,
              adversarial={"pgd_linf": acc if adv is None else adv})


def _verdict(verdicts, key):
  return next(v for v in verdicts if v.claim.startswith(f"({key})"))


def _results(v, analysis=None):
  return {r.shift: r for r in v.results
          if r.analysis == (analysis or r.analysis) and
          (analysis or r.in_verdict)}


class StatsTest(absltest.TestCase):

  def test_bernoulli_interval_contains_the_truth(self):
    covered, trials = 0, 100
    rng = np.random.default_rng(0)
    for i in range(trials):
      x = (rng.random(200) < 0.3).astype(np.float32)
      e, = stats.paired_mean_difference(x, stats.key_for(i, "bern"), B)
      covered += e.lo <= 0.3 <= e.hi
      self.assertAlmostEqual(e.value, x.mean(), places=6)
    # Nominal 95 %; 100 trials: anything in [88, 100] is unremarkable.
    self.assertBetween(covered, 88, 100)

  def test_same_seed_same_interval(self):
    x = (np.random.default_rng(1).random(300) < 0.6).astype(np.float32)
    a = stats.paired_mean_difference(x, stats.key_for(3, "d"), B)
    b = stats.paired_mean_difference(x, stats.key_for(3, "d"), B)
    c = stats.paired_mean_difference(x, stats.key_for(4, "d"), B)
    self.assertEqual(a, b)
    self.assertNotEqual(a, c)

  def test_examples_resampled_within_their_set(self):
    # Set 1 is all ones (weight 1/10 each), set 2 all zeros: every replicate
    # keeps each set's sum, so the interval has no width.
    x = np.concatenate([np.full(10, 0.1), np.zeros(5)])[:, None, None]
    point, reps = stats.bootstrap_means(x, [10, 5], stats.key_for(0, "s"), 50)
    np.testing.assert_allclose(point, [1.0], rtol=1e-6)
    np.testing.assert_allclose(reps, 1.0, rtol=1e-5)

  def test_seeds_are_resampled(self):
    # Seed means 0, 0, 1 (no example noise): replicates take the values
    # k/3 for k drawn seeds equal to the third one.
    x = np.zeros((4, 3, 1), np.float32)
    x[:, 2, 0] = 0.25
    _, reps = stats.bootstrap_means(x, [4], stats.key_for(0, "seeds"), 400)
    self.assertEqual(set(np.round(3 * reps[:, 0]).astype(int)),
                     {0, 1, 2, 3})

  def test_bad_input(self):
    with self.assertRaisesRegex(ValueError, "add up to"):
      stats.bootstrap_means(np.zeros((5, 1, 1)), [3], stats.key_for(0, "x"))
    with self.assertRaisesRegex(ValueError, "positive"):
      stats.bootstrap_means(np.zeros((5, 1, 1)), [5, 0],
                            stats.key_for(0, "x"))


def _a_world(compressed_acc, **kwargs):
  """An original (R = 0.8/0.9) and one pruned model."""
  return claims.make_study_data({
      "s/original": _model("s", "original", 1e6, 0.9, **_shifts(0.8)),
      "s/prune": _model("s", "prune", 3e5, 0.9, **_shifts(compressed_acc),
                        original_id="s/original",
                        setting={"sparsity": 0.7}, **kwargs),
  })


class ClaimATest(absltest.TestCase):

  def test_clear_loss_is_supported(self):
    a = _verdict(claims.test_claims(_a_world(0.6), num_replicates=B), "a")
    self.assertEqual(a.verdict, "supported")
    for shift, r in _results(a).items():
      self.assertEqual(r.verdict, "supported", shift)
      self.assertGreater(r.effect.lo, 0)
      # R(original) - R(pruned) = (0.8 - 0.6) / 0.9 up to sampling.
      self.assertAlmostEqual(r.effect.value, 0.2 / 0.9, delta=0.06)
      self.assertGreater(r.effect_drop.lo, 0)
      self.assertEqual(r.count, 1)

  def test_mirror_is_contradicted(self):
    a = _verdict(claims.test_claims(_a_world(0.88), num_replicates=B), "a")
    self.assertEqual(a.verdict, "contradicted")
    for r in _results(a).values():
      self.assertEqual(r.verdict, "contradicted")
      self.assertLess(r.effect.hi, 0)

  def test_no_effect_with_noise_is_inconclusive(self):
    # Same accuracies, but the pruned model's errors fall on other examples.
    a = _verdict(claims.test_claims(
        _a_world(0.8, independent=True, rng_seed=5), num_replicates=B), "a")
    self.assertEqual(a.verdict, "inconclusive")
    for r in _results(a).values():
      self.assertEqual(r.verdict, "inconclusive")
      self.assertLess(r.effect.lo, 0)
      self.assertGreater(r.effect.hi, 0)

  def test_tiny_effect_is_inconclusive(self):
    a = _verdict(claims.test_claims(
        _a_world(0.795, independent=True, rng_seed=7), num_replicates=B),
                 "a")
    self.assertEqual(a.verdict, "inconclusive")

  def test_seed_to_seed_flips_are_inconclusive(self):
    # Per seed the pruned model is clearly worse or clearly better (no
    # example noise can hide that), but the sign depends on the seed.
    models = {"s/original": _model("s", "original", 1e6, 0.9,
                                   corruption=0.8)}
    for seed, acc in zip(SEEDS, (0.6, 0.88, 0.88)):
      m = _model("s", "prune", 3e5, 0.9, corruption=acc, seeds=(seed,),
                 original_id="s/original")
      models.setdefault("s/prune", m)["cells"].update(m["cells"])
    a = _verdict(claims.test_claims(claims.make_study_data(models),
                                    num_replicates=B), "a")
    self.assertEqual(_results(a)["corruption"].verdict, "inconclusive")

  def test_same_seed_same_verdict_numbers(self):
    data = _a_world(0.7, independent=True, rng_seed=1)
    x = claims.test_claims(data, seed=3, num_replicates=B)
    y = claims.test_claims(data, seed=3, num_replicates=B)
    self.assertEqual([r.effect for v in x for r in v.results],
                     [r.effect for v in y for r in v.results])

  def test_not_testable_without_examples_or_comparisons(self):
    data = _a_world(0.6)
    verdicts = claims.test_claims(claims.StudyData(data.rows, {}),
                                  num_replicates=B)
    self.assertEqual({v.verdict for v in verdicts}, {"not testable"})
    self.assertIn("No per-example correctness", verdicts[0].notes[0])
    b, c, d = claims.test_claims(data, num_replicates=B)[1:]
    for v in (b, c, d):
      self.assertEqual(v.verdict, "not testable")


class QuantitiesTest(absltest.TestCase):

  def test_worst_case_over_attacks(self):
    def model(fgsm_fail, pgd_fail, method="original"):
      cells = {}
      for attack, fail in (("fgsm", fgsm_fail), ("pgd_linf", pgd_fail)):
        adv = np.ones(N_SHIFT, bool)
        adv[fail] = False
        cells[(0, "adversarial", attack)] = {
            0.0: np.ones(N_SHIFT, bool), 0.1: adv}
      cells[(0, "clean", "source")] = {None: np.ones(N_CLEAN, bool)}
      return dict(arch="s", method=method, size_bits=1e6, cells=cells)
    data = claims.make_study_data({
        # Each attack fails on 25 % of the examples, on disjoint ones.
        "m": model(slice(0, 50), slice(50, 100)),
        # The same 25 % for both.
        "k": model(slice(0, 50), slice(0, 50))})
    r = claims.robustness(data)
    self.assertAlmostEqual(r["m"]["adversarial"][1], 0.5)
    self.assertAlmostEqual(r["k"]["adversarial"][1], 0.75)
    self.assertAlmostEqual(r["m"]["adversarial"][2], 0.5)

  def test_all_zero_eps_is_excluded_and_reported(self):
    def model(acc01, seed_rng):
      rng = np.random.default_rng(seed_rng)
      clean = rng.random(N_CLEAN) < 0.9
      return dict(arch="s", method="original", size_bits=1e6, cells={
          (0, "clean", "source"): {None: clean},
          (0, "adversarial", "pgd_linf"): {
              0.0: clean[:N_SHIFT],
              0.1: rng.random(N_SHIFT) < acc01,
              0.3: np.zeros(N_SHIFT, bool)}})
    data = claims.make_study_data({"m": model(0.5, 0), "k": model(0.3, 1)})
    r = claims.robustness(data)
    for m in ("m", "k"):
      clean_n = data.examples[(m, 0, "clean", "source")][0, :N_SHIFT]
      adv = data.examples[(m, 0, "adversarial", "pgd_linf")]
      self.assertAlmostEqual(r[m]["adversarial"][0], clean_n.mean(), 6)
      # Only eps 0.1 counts: eps 0 is no shift, eps 0.3 is all-zero.
      self.assertAlmostEqual(r[m]["adversarial"][1], adv[1].mean(), 6)
    notes = claims.test_claims(data, num_replicates=B)[0].notes
    self.assertTrue(any("0 % at linf eps=0.3" in n for n in notes), notes)

  def test_domain_uses_the_whole_source_and_target_sets(self):
    data = _a_world(0.6)
    r = claims.robustness(data)
    for m in ("s/original", "s/prune"):
      clean = np.mean([data.examples[(m, s, "clean", "source")].mean()
                       for s in SEEDS])
      target = np.mean([data.examples[(m, s, "domain", "target")].mean()
                        for s in SEEDS])
      np.testing.assert_allclose(r[m]["domain"], (clean, target,
                                                  target / clean), rtol=1e-5)

  def test_examples_must_match_rows(self):
    data = _a_world(0.6)
    key = ("s/prune", 0, "corruption", "fog")
    bad = dict(data.examples)
    bad[key] = bad[key][:1]
    with self.assertRaisesRegex(ValueError, "levels"):
      claims.test_claims(claims.StudyData(data.rows, bad), num_replicates=B)
    bad[key] = ~data.examples[key]
    with self.assertRaisesRegex(ValueError, "disagrees with its rows"):
      claims.test_claims(claims.StudyData(data.rows, bad), num_replicates=B)
    with self.assertRaisesRegex(TypeError, "StudyData"):
      claims.test_claims(data.rows)


def _b_world(l_prune_size):
  """Small (1 Mbit) and large (4 Mbit) networks; large loses more R."""
  p = {"scope": "global", "structured": False}
  return claims.make_study_data({
      "s/original": _model("s", "original", 1e6, 0.9, **_shifts(0.8)),
      "l/original": _model("l", "original", 4e6, 0.9, **_shifts(0.8)),
      "s/prune": _model("s", "prune", 1e5, 0.9, **_shifts(0.75),
                        original_id="s/original",
                        setting=dict(p, sparsity=0.9)),
      "l/prune": _model("l", "prune", l_prune_size, 0.9, **_shifts(0.55),
                        original_id="l/original",
                        setting=dict(p, sparsity=0.97)),
      "l/prune90": _model("l", "prune", 4e5, 0.9, **_shifts(0.7),
                          original_id="l/original",
                          setting=dict(p, sparsity=0.9)),
      "l/ptq": _model("l", "quantize", 1e5, 0.9, **_shifts(0.8),
                      original_id="l/original",
                      setting={"weight_bits": 2, "activation_bits": 8}),
  })


class ClaimBTest(absltest.TestCase):

  def test_size_matching_boundary(self):
    for size, matched in ((1.15e5, True), (0.85e5, True), (1.16e5, False),
                          (0.84e5, False)):
      b = _verdict(claims.test_claims(_b_world(size), num_replicates=B), "b")
      labels = {c.label.split(" ")[0] for c in b.comparisons
                if c.analysis == "size-matched"}
      # l/ptq has the same size but another method: never matched.
      self.assertEqual(labels, {"l/prune"} if matched else set(), size)
      self.assertEqual(b.verdict, "supported" if matched else "not testable")

  def test_sub_analyses_do_not_enter_the_verdict(self):
    b = _verdict(claims.test_claims(_b_world(1e5), num_replicates=B), "b")
    same = _results(b, "same setting (sub-analysis)")
    self.assertEqual({r.count for r in same.values()}, {1})  # l/prune90.
    self.assertFalse(any(r.in_verdict for r in same.values()))
    vs_orig = _results(b, "compressed L vs uncompressed S (sub-analysis)")
    self.assertEqual(vs_orig, {})  # No L model within 15 % of S original.
    self.assertEqual({r.verdict for r in _results(b).values()},
                     {"supported"})

  def test_all_architecture_pairs(self):
    data = _b_world(1e5)
    extra = claims.make_study_data({
        "m/original": _model("m", "original", 2e6, 0.9, **_shifts(0.8)),
        "m/prune": _model("m", "prune", 1.05e5, 0.9, **_shifts(0.65),
                          original_id="m/original",
                          setting={"scope": "global", "structured": False,
                                   "sparsity": 0.95})})
    data = claims.StudyData(list(data.rows) + extra.rows,
                            {**data.examples, **extra.examples})
    b = _verdict(claims.test_claims(data, num_replicates=B), "b")
    pairs = {c.label.split(" ")[0] + "|" + c.label.split(" vs ")[1].split()[0]
             for c in b.comparisons if c.analysis == "size-matched"}
    self.assertEqual(pairs, {"l/prune|s/prune", "m/prune|s/prune",
                             "l/prune|m/prune"})


def _c_world(control_acc, students=1):
  models = {
      "t/original": _model("t", "original", 4e6, 0.9, **_shifts(0.8)),
      "t/prune": _model("t", "prune", 1.1e6, 0.9, **_shifts(0.6),
                        original_id="t/original",
                        setting={"sparsity": 0.75}),
      # Too large to be matched with a 1 Mbit student.
      "t/prune50": _model("t", "prune", 2e6, 0.9, **_shifts(0.5),
                          original_id="t/original",
                          setting={"sparsity": 0.5}),
  }
  for i in range(students):
    models[f"st{i}/distill"] = _model(
        f"st{i}", "distill", 1e6, 0.9, **_shifts(0.75),
        original_id="t/original", setting={"teacher": "t"})
    models[f"st{i}/control"] = _model(
        f"st{i}", "distill_control", 1e6, 0.9, **_shifts(control_acc),
        original_id="t/original")
  return claims.make_study_data(models)


class ClaimCTest(absltest.TestCase):

  def test_student_must_also_beat_its_control(self):
    c = _verdict(claims.test_claims(_c_world(0.75, students=2),
                                    num_replicates=B), "c")
    vs_pruned = _results(c, "vs pruned teacher (sub-analysis)")
    self.assertEqual({r.verdict for r in vs_pruned.values()}, {"supported"})
    self.assertEqual({r.count for r in vs_pruned.values()}, {2})
    # The student ties its control: no credit for distillation.
    self.assertEqual(c.verdict, "inconclusive")

  def test_beating_both_with_two_students_is_supported(self):
    c = _verdict(claims.test_claims(_c_world(0.6, students=2),
                                    num_replicates=B), "c")
    self.assertEqual(c.verdict, "supported")
    for r in _results(c).values():
      self.assertEqual(r.count, 2)
      self.assertGreater(r.effect.lo, 0)
    self.assertFalse(any("prune50" in x.label for x in c.comparisons))

  def test_pooled_interval_uses_the_same_replicates(self):
    # Two students with identical data: independent resampling would make
    # the pooled interval narrower than each comparison's; shared resampling
    # leaves it equal.
    c = _verdict(claims.test_claims(_c_world(0.6, students=2),
                                    num_replicates=B), "c")
    for shift, r in _results(c, "vs no-KD control (sub-analysis)").items():
      each = [x.effect for x in c.comparisons if x.shift == shift and
              x.analysis == r.analysis]
      self.assertLen(each, 2)
      for e in each:
        np.testing.assert_allclose(r.effect, e, atol=1e-9)

  def test_one_student_caps_the_verdict(self):
    c = _verdict(claims.test_claims(_c_world(0.6), num_replicates=B), "c")
    self.assertEqual({r.verdict for r in _results(c).values()},
                     {"supported"})
    self.assertEqual(c.verdict, "inconclusive")
    self.assertTrue(any("Only 1 student" in n for n in c.notes))


class ClaimDTest(absltest.TestCase):

  def test_int8_and_int4_apart(self):
    o = "n/original"
    data = claims.make_study_data({
        o: _model("n", "original", 32e6, 0.9, **_shifts(0.8)),
        # Ratio 4: int8 (R close to the original's) vs 75 % pruning.
        "n/ptq8": _model("n", "quantize", 8e6, 0.9, **_shifts(0.79),
                         original_id=o, setting={"weight_bits": 8}),
        "n/prune75": _model("n", "prune", 8.5e6, 0.9, **_shifts(0.65),
                            original_id=o, setting={"sparsity": 0.75}),
        # Ratio 8: int4 (less robust) vs 87.5 % pruning.
        "n/ptq4": _model("n", "quantize", 4e6, 0.9, **_shifts(0.5),
                         original_id=o, setting={"weight_bits": 4}),
        "n/prune88": _model("n", "prune", 4.2e6, 0.9, **_shifts(0.65),
                            original_id=o, setting={"sparsity": 0.875}),
    })
    d = _verdict(claims.test_claims(data, num_replicates=B), "d")
    self.assertEqual(d.verdict, "supported")
    int4 = _results(d, "int4")
    self.assertEqual({r.verdict for r in int4.values()}, {"contradicted"})
    self.assertFalse(any(r.in_verdict for r in int4.values()))
    pairs = {(c.analysis, c.label.split(" ")[0], c.label.split(" vs ")[1]
              .split()[0]) for c in d.comparisons}
    self.assertEqual(pairs, {("int8", "n/ptq8", "n/prune75"),
                             ("int4", "n/ptq4", "n/prune88")})


class SanityAndMarkdownTest(absltest.TestCase):

  def _adv_world(self, pgd01, fgsm01, pgd02, transfer01=None):
    rng = np.random.default_rng(0)
    clean = rng.random(N_SHIFT) < 0.9
    u = rng.random(N_SHIFT)
    cells = {(0, "clean", "source"): {None: clean},
             (0, "adversarial", "fgsm"): {0.0: clean, 0.1: u < fgsm01,
                                          0.2: u < fgsm01 - 0.1},
             (0, "adversarial", "pgd_linf"): {0.0: clean, 0.1: u < pgd01,
                                              0.2: u < pgd02}}
    if transfer01 is not None:
      cells[(0, "adversarial", "transfer_pgd_linf")] = {
          0.0: clean, 0.1: u < transfer01, 0.2: u < pgd02 + 0.05}
    return claims.make_study_data({"m": dict(
        arch="s", method="original", size_bits=1e6, cells=cells)})

  def test_consistent_attacks_are_not_flagged(self):
    self.assertEqual(claims.sanity_checks(
        self._adv_world(0.4, 0.5, 0.3, transfer01=0.45), num_replicates=B),
                     [])

  def test_flags(self):
    flags = claims.sanity_checks(
        self._adv_world(0.6, 0.4, 0.7, transfer01=0.2), num_replicates=B)
    text = "\n".join(flags)
    self.assertIn("pgd_linf accuracy is above FGSM's at eps=0.1", text)
    self.assertIn("pgd_linf accuracy rises from eps=0.1 to eps=0.2", text)
    self.assertIn("gradient masking: transfer_pgd_linf", text)
    self.assertNotIn("fgsm accuracy rises", text)

  def test_markdown(self):
    verdicts = claims.test_claims(_a_world(0.6), num_replicates=B)
    md = claims.render_markdown(verdicts, checks=[])
    for key in "abcd":
      self.assertIn(f"### ({key})", md)
    self.assertIn("**SUPPORTED**", md)
    self.assertIn("| **all compressed models** (verdict) | corruption | +0.",
                  md)
    self.assertIn("| s/prune vs s/original | adversarial |", md)
    self.assertIn("Nothing flagged", md)


if __name__ == "__main__":
  absltest.main()
