"""The claims logic on hand-made result rows whose verdicts are known."""

from absl.testing import absltest

from robustjax.study import claims


def _model(model_id, arch, method, size_bits, clean, domain, corruption,
           adversarial, original_id=None, setting=None):
  """Rows of one model: clean + one row per shift type."""
  base = dict(model_id=model_id, arch=arch, method=method,
              setting=setting or {}, size_bits=size_bits, sparsity=0.0,
              original_id=original_id, n=100)
  return [dict(base, shift="clean", name="source", level=None,
               accuracy=clean),
          dict(base, shift="domain", name="target", level=None,
               accuracy=domain),
          dict(base, shift="corruption", name="fog", level=3,
               accuracy=corruption),
          dict(base, shift="adversarial", name="pgd_linf", level=0.0,
               accuracy=clean),
          dict(base, shift="adversarial", name="pgd_linf", level=0.1,
               accuracy=adversarial)]


def _paper_world():
  """A grid in which every claim of the paper holds."""
  rows = []
  # Originals: small (1 Mbit) and large (4 Mbit), both fairly robust.
  rows += _model("s/original", "small", "original", 1e6, 0.9, 0.72, 0.72,
                 0.45)
  rows += _model("l/original", "large", "original", 4e6, 0.95, 0.80, 0.80,
                 0.50)
  prune = {"sparsity": 0.75, "scope": "global"}
  # Pruning: small loses a little robustness, large loses more.
  rows += _model("s/prune", "small", "prune", 0.3e6, 0.9, 0.63, 0.63, 0.36,
                 "s/original", prune)
  rows += _model("l/prune", "large", "prune", 1.1e6, 0.95, 0.57, 0.57, 0.29,
                 "l/original", prune)
  q = {"weight_bits": 8}
  # PTQ: barely loses robustness.
  rows += _model("s/ptq", "small", "quantize", 0.25e6, 0.9, 0.71, 0.71, 0.44,
                 "s/original", q)
  rows += _model("l/ptq", "large", "quantize", 1e6, 0.95, 0.78, 0.78, 0.48,
                 "l/original", q)
  # A student the size of the small network, more robust than pruned ones.
  rows += _model("st/distill", "small", "distill", 1e6, 0.9, 0.70, 0.70, 0.40,
                 "l/original", {"alpha": 0.9})
  return rows


class ClaimsTest(absltest.TestCase):

  def test_paper_world_supports_every_claim(self):
    verdicts = claims.test_claims(_paper_world())
    self.assertEqual([v.verdict for v in verdicts], ["supported"] * 4,
                     msg="\n".join(e for v in verdicts for e in v.evidence))

  def test_robustness_is_relative_to_clean_accuracy(self):
    models = claims.summarize_models(_paper_world())
    self.assertAlmostEqual(models["s/original"].robustness["domain"], 0.8)
    # eps = 0 rows are excluded from the adversarial mean.
    self.assertAlmostEqual(models["s/original"].mean["adversarial"], 0.45)

  def test_opposite_world_rejects_claims(self):
    rows = []
    rows += _model("s/original", "small", "original", 1e6, 0.9, 0.6, 0.6, 0.3)
    rows += _model("l/original", "large", "original", 4e6, 0.9, 0.6, 0.6, 0.3)
    # Compression makes everything *more* robust, PTQ least of all; the
    # large network gains most; the student is less robust than pruning.
    rows += _model("s/prune", "small", "prune", 1e6, 0.9, 0.7, 0.7, 0.4,
                   "s/original", {"sparsity": 0.5})
    rows += _model("l/prune", "large", "prune", 1.5e6, 0.9, 0.8, 0.8, 0.5,
                   "l/original", {"sparsity": 0.5})
    rows += _model("s/ptq", "small", "quantize", 1e6, 0.9, 0.62, 0.62, 0.32,
                   "s/original", {"weight_bits": 8})
    rows += _model("st/distill", "small", "distill", 1e6, 0.9, 0.5, 0.5, 0.2,
                   "l/original", {"alpha": 0.9})
    a, b, c, d = claims.test_claims(rows)
    self.assertEqual(a.verdict, "not supported")
    self.assertEqual(b.verdict, "not supported")
    self.assertEqual(c.verdict, "not supported")
    self.assertEqual(d.verdict, "not supported")

  def test_mixed_and_not_testable(self):
    rows = []
    rows += _model("s/original", "small", "original", 1e6, 0.9, 0.6, 0.6, 0.3)
    # Less robust on domain, more on corruption, equal on adversarial.
    rows += _model("s/prune", "small", "prune", 1e6, 0.9, 0.5, 0.7, 0.3,
                   "s/original", {"sparsity": 0.5})
    # Less robust on domain and corruption, equal on adversarial.
    rows += _model("s/prune9", "small", "prune", 1e6, 0.9, 0.5, 0.5, 0.3,
                   "s/original", {"sparsity": 0.9})
    a, b, c, d = claims.test_claims(rows)
    self.assertEqual(a.verdict, "mixed")
    self.assertEqual((a.held, a.total), (3, 6))
    for v in (b, c, d):
      self.assertEqual(v.verdict, "not testable")

  def test_ties_do_not_count_for_the_claim(self):
    rows = []
    rows += _model("s/original", "small", "original", 1e6, 0.9, 0.6, 0.6, 0.3)
    rows += _model("s/prune", "small", "prune", 1e6, 0.9, 0.6, 0.6, 0.3,
                   "s/original", {"sparsity": 0.5})
    a = claims.test_claims(rows)[0]
    self.assertEqual((a.held, a.total, a.verdict), (0, 3, "not supported"))

  def test_student_without_similar_sized_pruned_model(self):
    rows = []
    rows += _model("l/original", "large", "original", 4e6, 0.9, 0.6, 0.6, 0.3)
    rows += _model("l/prune", "large", "prune", 3e6, 0.9, 0.6, 0.6, 0.3,
                   "l/original", {"sparsity": 0.25})
    rows += _model("st/distill", "small", "distill", 0.1e6, 0.9, 0.6, 0.6,
                   0.3, "l/original", {"alpha": 0.9})
    c = claims.test_claims(rows)[2]
    self.assertEqual(c.verdict, "not testable")
    self.assertIn("no pruned model within", c.evidence[0])


if __name__ == "__main__":
  absltest.main()
