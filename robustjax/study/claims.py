"""Tests the four claims of Shen et al. (2024) on measured result rows.

Robustness of a model under a shift type is measured by its *relative
robustness* R = (mean accuracy under that shift) / (clean accuracy), so that
a model is not called less robust merely because it is less accurate. Shift
types: `domain` (every target domain), `corruption` (every name x severity),
`adversarial` (every attack x eps > 0).

Each claim is decided by counting comparisons: *supported* when at least
2/3 of them go the claimed way (by more than `TOLERANCE`), *not supported*
when at most 1/3 do, *mixed* otherwise, *not testable* when the grid has no
comparison for it. Every verdict lists the numbers that decided it. A result
that contradicts the paper is reported as such.
"""

import collections
import dataclasses
from typing import Dict, List, Optional, Sequence

import numpy as np

from robustjax.robustness import metrics

SHIFTS = ("domain", "corruption", "adversarial")
TOLERANCE = 0.005  # Differences in R below this count as ties (not claimed).
SIMILAR_SIZE = 2.0  # Two models are "of similar size" within this factor.


@dataclasses.dataclass
class ModelSummary:
  model_id: str
  arch: str
  method: str
  setting: dict
  size_bits: float
  sparsity: float
  original_id: Optional[str]  # Uncompressed reference (teacher for KD).
  clean: float
  mean: Dict[str, float]  # shift type -> mean accuracy.
  robustness: Dict[str, float]  # shift type -> relative robustness R.


@dataclasses.dataclass
class Verdict:
  claim: str
  verdict: str  # supported | not supported | mixed | not testable
  held: int
  total: int
  evidence: List[str]


def summarize_models(rows: Sequence[dict]) -> Dict[str, ModelSummary]:
  """Groups rows by model and computes clean, means and R per shift type."""
  by_model = collections.defaultdict(list)
  for r in rows:
    by_model[r["model_id"]].append(r)
  out = {}
  for model_id, model_rows in by_model.items():
    first = model_rows[0]
    s = metrics.summarize(model_rows)
    out[model_id] = ModelSummary(
        model_id=model_id, arch=first["arch"], method=first["method"],
        setting=first.get("setting") or {},
        size_bits=float(first.get("size_bits") or np.nan),
        sparsity=float(first.get("sparsity") or 0.0),
        original_id=first.get("original_id"), clean=s["clean"],
        mean={k: s[k] for k in SHIFTS},
        robustness={k: s[f"{k}_relative"] for k in SHIFTS})
  return out


def _decide(claim, held, total, evidence) -> Verdict:
  if total == 0:
    return Verdict(claim, "not testable", 0, 0,
                   evidence or ["The grid has no comparison for this claim."])
  frac = held / total
  verdict = ("supported" if frac >= 2 / 3 else
             "not supported" if frac <= 1 / 3 else "mixed")
  return Verdict(claim, verdict, held, total, evidence)


def _valid(x):
  return x is not None and np.isfinite(x)


def _r_pairs(a: ModelSummary, b: ModelSummary):
  """(shift, R of a, R of b) for every shift type both models have."""
  for shift in SHIFTS:
    ra, rb = a.robustness[shift], b.robustness[shift]
    if _valid(ra) and _valid(rb):
      yield shift, ra, rb


class _Tally:
  """Counts comparisons (and whether each goes the claimed way)."""

  def __init__(self):
    self.held, self.total, self.evidence = 0, 0, []

  def add(self, held: bool, text: str):
    self.total += 1
    self.held += bool(held)
    self.evidence.append(text)

  def decide(self, claim: str) -> Verdict:
    return _decide(claim, self.held, self.total, self.evidence)


def claim_a(models: Dict[str, ModelSummary]) -> Verdict:
  """(a) Compressed models are less robust than their originals."""
  t = _Tally()
  for m in models.values():
    o = models.get(m.original_id) if m.original_id else None
    if m.method in ("original", "distill_control") or o is None:
      continue
    for shift, rm, ro in _r_pairs(m, o):
      less = rm < ro - TOLERANCE
      t.add(less, f"{m.model_id} vs {o.model_id}, {shift}: R {rm:.3f} vs "
            f"{ro:.3f} -> {'less' if less else 'not less'} robust")
  return t.decide("(a) Compressed models are less robust than their "
                  "uncompressed originals.")


def _loss(models, m, shift):
  o = models.get(m.original_id) if m.original_id else None
  if o is None:
    return None
  rm, ro = m.robustness[shift], o.robustness[shift]
  return ro - rm if _valid(rm) and _valid(ro) else None


def claim_b(models: Dict[str, ModelSummary]) -> Verdict:
  """(b) Larger networks lose more robustness, even at a similar size."""
  t = _Tally()
  originals = {m.arch: m for m in models.values() if m.method == "original"}
  sizes = {a: o.size_bits for a, o in originals.items()}
  # 1. Same method and setting applied to a larger and a smaller network.
  groups = collections.defaultdict(list)
  for m in models.values():
    if m.method in ("prune", "quantize") and m.arch in sizes:
      key = (m.method, tuple(sorted(m.setting.items())))
      groups[key].append(m)
  for (method, setting), ms in sorted(groups.items(), key=str):
    ms = sorted(ms, key=lambda m: sizes[m.arch])
    for small, large in zip(ms, ms[1:]):
      if sizes[large.arch] <= sizes[small.arch]:
        continue
      for shift in SHIFTS:
        ll, ls = _loss(models, large, shift), _loss(models, small, shift)
        if ll is None or ls is None:
          continue
        more = ll > ls + TOLERANCE
        t.add(more, f"{method} {dict(setting)}, {shift}: robustness loss "
              f"{large.arch} {ll:+.3f} vs {small.arch} {ls:+.3f} -> "
              f"larger loses {'more' if more else 'not more'}")
  # 2. A compressed large network vs a small original of similar size.
  for m in models.values():
    if m.method not in ("prune", "quantize") or m.arch not in sizes:
      continue
    for arch, small in originals.items():
      if sizes[arch] >= sizes[m.arch] or not _valid(m.size_bits):
        continue
      ratio = m.size_bits / small.size_bits
      if not 1 / SIMILAR_SIZE <= ratio <= SIMILAR_SIZE:
        continue
      for shift, rm, rs in _r_pairs(m, small):
        less = rm < rs - TOLERANCE
        t.add(less, f"{m.model_id} ({m.size_bits / 8e3:.1f} kB) vs "
              f"{small.model_id} ({small.size_bits / 8e3:.1f} kB), "
              f"{shift}: R {rm:.3f} vs {rs:.3f} -> compressed large is "
              f"{'less' if less else 'not less'} robust")
  return t.decide("(b) Larger networks lose more robustness when compressed, "
                  "even when compressed to a similar size as smaller ones.")


def claim_c(models: Dict[str, ModelSummary]) -> Verdict:
  """(c) Distilled students are more robust than pruned nets of similar size."""
  t = _Tally()
  pruned = [m for m in models.values() if m.method == "prune"
            and _valid(m.size_bits)]
  for s in models.values():
    if s.method != "distill" or not _valid(s.size_bits) or not pruned:
      continue
    p = min(pruned, key=lambda p: abs(np.log(p.size_bits / s.size_bits)))
    ratio = p.size_bits / s.size_bits
    if not 1 / SIMILAR_SIZE <= ratio <= SIMILAR_SIZE:
      t.evidence.append(f"{s.model_id}: no pruned model within "
                        f"{SIMILAR_SIZE}x of its size (closest {p.model_id}, "
                        f"ratio {ratio:.2f}).")
      continue
    for shift, rs, rp in _r_pairs(s, p):
      more = rs > rp + TOLERANCE
      t.add(more, f"{s.model_id} ({s.size_bits / 8e3:.1f} kB) vs "
            f"{p.model_id} ({p.size_bits / 8e3:.1f} kB), {shift}: R "
            f"{rs:.3f} vs {rp:.3f} -> student "
            f"{'more' if more else 'not more'} robust")
  return t.decide("(c) Distilled students are more robust than pruned "
                  "networks of similar size.")


def claim_d(models: Dict[str, ModelSummary]) -> Verdict:
  """(d) Post-training quantization is the most robust compression method."""
  t = _Tally()
  for shift in SHIFTS:
    change = collections.defaultdict(list)
    for m in models.values():
      if m.method in ("prune", "distill", "quantize"):
        loss = _loss(models, m, shift)
        if loss is not None:
          change[m.method].append(-loss)
    if "quantize" not in change or len(change) < 2:
      continue
    means = {k: float(np.mean(v)) for k, v in change.items()}
    best_other = max(v for k, v in means.items() if k != "quantize")
    best = means["quantize"] > best_other + TOLERANCE
    t.add(best, f"{shift}: mean change in R vs original: " + ", ".join(
        f"{k} {v:+.3f}" for k, v in sorted(means.items())) +
          f" -> PTQ {'is' if best else 'is not'} the most robust")
  return t.decide("(d) Post-training quantization is the most robust "
                  "compression method.")


def test_claims(rows: Sequence[dict]) -> List[Verdict]:
  """All four verdicts for a study's rows."""
  models = summarize_models(rows)
  return [claim_a(models), claim_b(models), claim_c(models), claim_d(models)]
