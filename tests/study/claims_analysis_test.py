"""The claims' verdicts on hand-made per-example data.

Each model's correctness is drawn from a latent difficulty per example that
every model shares (example i is correct iff u_i < accuracy), as real models
agree on which images are hard; `independent=True` gives a model its own
draws instead, i.e. pure noise relative to the others.
"""

import zlib

from absl.testing import absltest
import numpy as np

from robustjax.study.claims import analysis
from robustjax.study.claims import data as claims_data
from robustjax.study.claims import report as claims_report

N_CLEAN, N_TARGET, N_SHIFT = 400, 300, 200
SEEDS = (0, 1, 2, 3, 4)
OPTIONS = analysis.Options(num_classes=10)


def _test(data, options=OPTIONS):
  return analysis.test_claims(data, options)


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
    The model dict for `claims_data.make_study_data`.
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


def _verdict(result, key):
  return next(v for v in result.verdicts if v.key == key)


def _results(v, name=None):
  """shift -> cell of analysis `name` (default: the deciding cells)."""
  name = name or v.cells[0].analysis
  return {c.shift: c for c in v.cells if c.analysis == name}


def _a_world(compressed_acc, **kwargs):
  """An original (R = 0.8/0.9) and one pruned model."""
  return claims_data.make_study_data({
      "s/original": _model("s", "original", 1e6, 0.9, **_shifts(0.8)),
      "s/prune": _model("s", "prune", 3e5, 0.9, **_shifts(compressed_acc),
                        original_id="s/original",
                        setting={"sparsity": 0.7}, **kwargs),
  })


class ClaimATest(absltest.TestCase):

  def test_clear_loss_is_supported(self):
    a = _verdict(_test(_a_world(0.6)), "a")
    self.assertEqual(a.verdict, "supported")
    for shift, r in _results(a).items():
      self.assertEqual(r.verdict, "supported", shift)
      self.assertGreater(r.effect.lo, 0)
      # R(original) - R(pruned) = (0.8 - 0.6) / 0.9 up to sampling.
      self.assertAlmostEqual(r.effect.value, 0.2 / 0.9, delta=0.06)
      self.assertGreater(r.effect_drop.lo, 0)
      self.assertEqual(r.count, 1)

  def test_mirror_is_contradicted(self):
    a = _verdict(_test(_a_world(0.88)), "a")
    self.assertEqual(a.verdict, "contradicted")
    for r in _results(a).values():
      self.assertEqual(r.verdict, "contradicted")
      self.assertLess(r.effect.hi, 0)

  def test_no_effect_with_noise_is_inconclusive(self):
    # Same accuracies, but the pruned model's errors fall on other examples.
    a = _verdict(_test(
        _a_world(0.8, independent=True, rng_seed=5)), "a")
    self.assertEqual(a.verdict, "inconclusive")
    for r in _results(a).values():
      self.assertEqual(r.verdict, "inconclusive")
      self.assertLess(r.effect.lo, 0)
      self.assertGreater(r.effect.hi, 0)

  def test_tiny_effect_is_inconclusive(self):
    a = _verdict(_test(
        _a_world(0.795, independent=True, rng_seed=7)),
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
    a = _verdict(_test(claims_data.make_study_data(models)), "a")
    self.assertEqual(_results(a)["corruption"].verdict, "inconclusive")

  def test_deterministic(self):
    data = _a_world(0.7, independent=True, rng_seed=1)
    x, y = _test(data), _test(data)
    self.assertEqual([c.effect for v in x.verdicts for c in v.cells],
                     [c.effect for v in y.verdicts for c in v.cells])

  def test_not_testable_without_examples_or_comparisons(self):
    data = _a_world(0.6)
    result = _test(claims_data.StudyData(data.rows, {}))
    self.assertEqual({v.verdict for v in result.verdicts}, {"not testable"})
    self.assertIn("No per-example correctness", result.notes[0])
    b, c, d = _test(data).verdicts[1:]
    for v in (b, c, d):
      self.assertEqual(v.verdict, "not testable")

  def test_only_primary_shift_types_decide(self):
    # Corruption says "lost", the primary shift types see no effect.
    data = claims_data.make_study_data({
        "s/original": _model("s", "original", 1e6, 0.9, **_shifts(0.8)),
        "s/prune": _model("s", "prune", 3e5, 0.9, domain=0.8,
                          corruption=0.5, adversarial={"pgd_linf": 0.8},
                          original_id="s/original")})
    a = _verdict(_test(data), "a")
    self.assertEqual(_results(a)["corruption"].verdict, "supported")
    self.assertFalse(_results(a)["corruption"].in_verdict)
    self.assertEqual(a.verdict, "inconclusive")
    options = analysis.Options(num_classes=10, primary=("corruption",))
    self.assertEqual(_verdict(_test(data, options), "a").verdict,
                     "supported")

  def test_family_correction(self):
    # Two primary cells testable: each at alpha / 2; secondary alone: alpha.
    a = _verdict(_test(_a_world(0.6)), "a")
    cells = _results(a)
    self.assertAlmostEqual(cells["domain"].alpha, 0.025)
    self.assertAlmostEqual(cells["adversarial"].alpha, 0.025)
    self.assertAlmostEqual(cells["corruption"].alpha, 0.05)
    e = cells["domain"].components[""]
    self.assertEqual(cells["domain"].effect, e.interval(0.025))
    self.assertGreater(cells["domain"].mde, 0)
    self.assertLess(cells["domain"].mde_10, cells["domain"].mde)


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
    data = claims_data.make_study_data({
        # Each attack fails on 25 % of the examples, on disjoint ones.
        "m": model(slice(0, 50), slice(50, 100)),
        # The same 25 % for both.
        "k": model(slice(0, 50), slice(0, 50))})
    r = claims_data.robustness(data)
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
    data = claims_data.make_study_data({"m": model(0.5, 0), "k": model(0.3, 1)})
    r = claims_data.robustness(data)
    for m in ("m", "k"):
      clean_n = data.examples[(m, 0, "clean", "source")][0, :N_SHIFT]
      adv = data.examples[(m, 0, "adversarial", "pgd_linf")]
      self.assertAlmostEqual(r[m]["adversarial"][0], clean_n.mean(), 6)
      # Only eps 0.1 counts: eps 0 is no shift, eps 0.3 is all-zero.
      self.assertAlmostEqual(r[m]["adversarial"][1], adv[1].mean(), 6)
    notes = _test(data).notes
    self.assertTrue(any("0 % at linf eps=0.3" in n for n in notes), notes)

  def test_domain_uses_the_whole_source_and_target_sets(self):
    data = _a_world(0.6)
    r = claims_data.robustness(data)
    for m in ("s/original", "s/prune"):
      clean = np.array([data.examples[(m, s, "clean", "source")].mean()
                        for s in SEEDS])
      target = np.array([data.examples[(m, s, "domain", "target")].mean()
                         for s in SEEDS])
      # Accuracies averaged over seeds; R per seed, then averaged.
      np.testing.assert_allclose(r[m]["domain"], (
          clean.mean(), target.mean(), np.mean(target / clean)), rtol=1e-5)

  def test_examples_must_match_rows(self):
    data = _a_world(0.6)
    key = ("s/prune", 0, "corruption", "fog")
    bad = dict(data.examples)
    bad[key] = bad[key][:1]
    with self.assertRaisesRegex(ValueError, "levels"):
      _test(claims_data.StudyData(data.rows, bad))
    bad[key] = ~data.examples[key]
    with self.assertRaisesRegex(ValueError, "disagrees with its rows"):
      _test(claims_data.StudyData(data.rows, bad))
    with self.assertRaisesRegex(TypeError, "StudyData"):
      analysis.test_claims(data.rows)


def _b_world(l_prune_size):
  """Small (1 Mbit) and large (4 Mbit) networks; large loses more R."""
  p = {"scope": "global", "structured": False}
  return claims_data.make_study_data({
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
      b = _verdict(_test(_b_world(size)), "b")
      labels = {c.label.split(" ")[0] for c in b.comparisons
                if c.analysis == "size-matched"}
      # l/ptq has the same size but another method: never matched.
      self.assertEqual(labels, {"l/prune"} if matched else set(), size)
      self.assertEqual(b.verdict, "supported" if matched else "not testable")

  def test_sub_analyses_do_not_enter_the_verdict(self):
    b = _verdict(_test(_b_world(1e5)), "b")
    same = _results(b, "same setting (secondary)")
    self.assertEqual({r.count for r in same.values()}, {1})  # l/prune90.
    self.assertFalse(any(r.in_verdict for r in same.values()))
    vs_orig = _results(b, "compressed L vs uncompressed S (secondary)")
    self.assertEqual(vs_orig, {})  # No L model within 15 % of S original.
    self.assertEqual({r.verdict for r in _results(b).values()},
                     {"supported"})

  def test_all_architecture_pairs(self):
    data = _b_world(1e5)
    extra = claims_data.make_study_data({
        "m/original": _model("m", "original", 2e6, 0.9, **_shifts(0.8)),
        "m/prune": _model("m", "prune", 1.05e5, 0.9, **_shifts(0.65),
                          original_id="m/original",
                          setting={"scope": "global", "structured": False,
                                   "sparsity": 0.95})})
    data = claims_data.StudyData(list(data.rows) + extra.rows,
                            {**data.examples, **extra.examples})
    b = _verdict(_test(data), "b")
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
  return claims_data.make_study_data(models)


class ClaimCTest(absltest.TestCase):

  def test_student_must_also_beat_its_control(self):
    c = _verdict(_test(_c_world(0.75, students=2)), "c")
    for cell in _results(c).values():
      vs_pruned = cell.components["vs pruned teacher"].interval(0.05)
      self.assertGreater(vs_pruned.lo, 0)
      self.assertEqual(cell.count, 4)
    # The student ties its control: no credit for distillation.
    self.assertEqual(c.verdict, "inconclusive")

  def test_beating_both_with_two_students_is_supported(self):
    c = _verdict(_test(_c_world(0.6, students=2)), "c")
    self.assertEqual(c.verdict, "supported")
    for r in _results(c).values():
      self.assertEqual(r.count, 4)
      self.assertGreater(r.effect.lo, 0)
      # The cell's effect is the smaller component.
      self.assertAlmostEqual(r.effect.value, min(
          e.value for e in r.components.values()))
    self.assertFalse(any("prune50" in x.label for x in c.comparisons))

  def test_pooled_equals_each_for_identical_students(self):
    c = _verdict(_test(_c_world(0.6, students=2)), "c")
    for shift, r in _results(c).items():
      pooled = r.components["vs no-KD control"].interval(0.05)
      each = [x.effect for x in c.comparisons if x.shift == shift and
              "control" in x.label]
      self.assertLen(each, 2)
      for e in each:
        np.testing.assert_allclose(pooled, e, atol=1e-9)

  def test_one_student_caps_the_verdict(self):
    c = _verdict(_test(_c_world(0.6)), "c")
    self.assertEqual({r.verdict for r in _results(c).values()},
                     {"supported"})
    self.assertEqual(c.verdict, "inconclusive")
    self.assertTrue(any("Only 1 student" in n for n in c.notes))


def _d_world(distilled_acc):
  o = "n/original"
  return claims_data.make_study_data({
      o: _model("n", "original", 32e6, 0.9, **_shifts(0.8)),
      # Ratio 4: int8 (R close to the original's) vs 75 % pruning and a
      # distilled student of about the same size.
      "n/ptq8": _model("n", "quantize", 8e6, 0.9, **_shifts(0.79),
                       original_id=o, setting={"weight_bits": 8}),
      "n/prune75": _model("n", "prune", 8.5e6, 0.9, **_shifts(0.65),
                          original_id=o, setting={"sparsity": 0.75}),
      "m/distill": _model("m", "distill", 7.8e6, 0.9,
                          **_shifts(distilled_acc), original_id=o,
                          setting={"teacher": "n"}),
      # Ratio 8: int4 (less robust) vs 87.5 % pruning.
      "n/ptq4": _model("n", "quantize", 4e6, 0.9, **_shifts(0.5),
                       original_id=o, setting={"weight_bits": 4}),
      "n/prune88": _model("n", "prune", 4.2e6, 0.9, **_shifts(0.65),
                          original_id=o, setting={"sparsity": 0.875}),
  })


class ClaimDTest(absltest.TestCase):

  def test_int8_beats_both_and_int4_apart(self):
    d = _verdict(_test(_d_world(0.7)), "d")
    self.assertEqual(d.verdict, "supported")
    int4 = _results(d, "int4 (secondary)")
    self.assertEqual({r.verdict for r in int4.values()}, {"contradicted"})
    self.assertFalse(any(r.in_verdict for r in int4.values()))
    pairs = {(c.analysis, c.label.split(" ")[0], c.label.split(" vs ")[1]
              .split()[0]) for c in d.comparisons}
    self.assertEqual(pairs, {("int8", "n/ptq8", "n/prune75"),
                             ("int8", "n/ptq8", "m/distill"),
                             ("int4 (secondary)", "n/ptq4", "n/prune88")})

  def test_beating_pruning_but_not_distillation_is_not_supported(self):
    d = _verdict(_test(_d_world(0.85)), "d")
    for cell in _results(d).values():
      self.assertGreater(cell.components["vs pruned"].interval(0.05).lo, 0)
      self.assertLess(cell.components["vs distilled"].value, 0)
      self.assertNotEqual(cell.verdict, "supported")
    self.assertIn(d.verdict, ("contradicted", "inconclusive"))

  def test_equivalence_with_the_original(self):
    d = _verdict(_test(_d_world(0.7)), "d")
    tost = _results(d, "int8 equivalent to its original (TOST, secondary)")
    # int8 at 0.79 vs 0.8: R differs by ~0.0125, inside +-0.05 at 5 seeds.
    options = analysis.Options(num_classes=10, equivalence_margin=0.05)
    wide = _results(_verdict(_test(_d_world(0.7), options), "d"),
                    "int8 equivalent to its original (TOST, secondary)")
    self.assertTrue(all(c.verdict.startswith("equivalent")
                        for c in wide.values()), wide)
    narrow = _test(_d_world(0.7), analysis.Options(
        num_classes=10, equivalence_margin=0.001))
    narrow = _results(_verdict(narrow, "d"), tost["domain"].analysis)
    self.assertTrue(all(c.verdict.startswith("not shown")
                        for c in narrow.values()))


class UsableModelsTest(absltest.TestCase):

  def test_a_model_at_chance_changes_no_verdict(self):
    base = _b_world(1e5)
    # An extra pruning of L that collapsed to chance (10 classes) yet keeps
    # its (chance-level) accuracy under every shift: R = shifted / clean
    # would call it perfectly robust.
    extra = claims_data.make_study_data({
        "l/prune-collapsed": _model(
            "l", "prune", 1.02e5, 0.1, **_shifts(0.1),
            original_id="l/original", independent=True, rng_seed=3,
            setting={"scope": "global", "structured": False,
                     "sparsity": 0.99})})
    data = claims_data.StudyData(list(base.rows) + extra.rows,
                                 {**base.examples, **extra.examples})
    before, after = _test(base), _test(data)
    self.assertEqual([v.verdict for v in before.verdicts],
                     [v.verdict for v in after.verdicts])
    self.assertEqual([c.verdict for v in before.verdicts for c in v.cells],
                     [c.verdict for v in after.verdicts for c in v.cells])
    self.assertEqual([e.model_id for e in after.excluded],
                     ["l/prune-collapsed"])
    self.assertFalse(any("collapsed" in c.label for v in after.verdicts
                         for c in v.comparisons))
    # Without the exclusion it would enter (b).
    keep = analysis.Options(num_classes=10, max_clean_drop=1.0)
    self.assertTrue(any("collapsed" in c.label for v in _test(
        data, keep).verdicts for c in v.comparisons))

  def test_chance_corrected_r(self):
    data = _a_world(0.6)
    plain = claims_data.robustness(data)
    corrected = claims_data.robustness(data, chance=0.1)
    for m in ("s/original", "s/prune"):
      clean, shifted, r = corrected[m]["domain"]
      self.assertAlmostEqual(plain[m]["domain"][0], clean)
      self.assertAlmostEqual(r, (shifted - 0.1) / (clean - 0.1), delta=0.02)
    at_chance = claims_data.chance_corrected(0.1, 0.1, 0.1)
    self.assertTrue(np.isnan(at_chance))


class NegativeControlTest(absltest.TestCase):

  def test_replicate_comes_out_inconclusive(self):
    data = claims_data.make_study_data({
        "s/original": _model("s", "original", 1e6, 0.9, **_shifts(0.8)),
        "s/replicate": _model("s", "replicate", 1e6, 0.9, **_shifts(0.8),
                              original_id="s/original", independent=True,
                              rng_seed=11),
        "s/prune": _model("s", "prune", 3e5, 0.9, **_shifts(0.6),
                          original_id="s/original")})
    result = _test(data)
    self.assertEqual({c.shift for c in result.control},
                     set(claims_data.SHIFT_TYPES))
    self.assertEqual({c.verdict for c in result.control}, {"inconclusive"})
    # As a claim's deciding cell: (a) is testable on the two primary shift
    # types (alpha / 2) and on corruption (alpha / 1).
    self.assertEqual({c.shift: c.alpha for c in result.control},
                     {"domain": 0.025, "adversarial": 0.025,
                      "corruption": 0.05})
    # The replicate is no compressed model: (a) compares s/prune only.
    a = _verdict(result, "a")
    self.assertEqual({c.count for c in _results(a).values()}, {1})
    md = claims_report.render_markdown(result)
    self.assertIn("### Negative control", md)
    self.assertIn("| negative control | domain (primary) |", md)


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
    return claims_data.make_study_data({"m": dict(
        arch="s", method="original", size_bits=1e6, cells=cells)})

  def test_consistent_attacks_are_not_flagged(self):
    self.assertEqual(analysis.sanity_checks(
        self._adv_world(0.4, 0.5, 0.3, transfer01=0.45)),
                     [])

  def test_flags(self):
    flags = analysis.sanity_checks(
        self._adv_world(0.6, 0.4, 0.7, transfer01=0.2))
    text = "\n".join(flags)
    self.assertIn("pgd_linf accuracy is above FGSM's at eps=0.1", text)
    self.assertIn("pgd_linf accuracy rises from eps=0.1 to eps=0.2", text)
    self.assertIn("gradient masking: transfer_pgd_linf", text)
    self.assertNotIn("fgsm accuracy rises", text)

  def test_markdown_and_forest_plot(self):
    result = _test(_a_world(0.6))
    md = claims_report.render_markdown(result, checks=[])
    for key in "abcd":
      self.assertIn(f"### ({key})", md)
    self.assertIn("**SUPPORTED**", md)
    self.assertIn("| all compressed models | corruption | +0.", md)
    self.assertIn("| all compressed models | domain (primary) | +0.", md)
    self.assertIn("| s/prune vs s/original | adversarial |", md)
    self.assertIn("Nothing flagged", md)
    self.assertIn("Bonferroni", md)
    fig = claims_report.forest_figure(result)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    self.assertEqual(labels[:2], ["(a) domain [primary]",
                                  "(a) adversarial [primary]"])
    self.assertIn("(a) corruption [secondary]", labels)


if __name__ == "__main__":
  absltest.main()
