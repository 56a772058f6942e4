"""The comparisons that test the claims, and the records of their results.

For each claim, `CLAIMS` gives its statement, how its effect is oriented and
which comparisons (`Spec`s) the grid's models allow: which models are
paired, matched in size or compression ratio within `SIZE_TOLERANCE` (rules:
`robustjax.study.claims`). `Comparison`, `ShiftResult` and `Verdict` record
what `claims.test_claims` measured.
"""

import dataclasses
from typing import List, Optional, Tuple

import numpy as np

from robustjax.study import claims_data
from robustjax.study import stats

SIZE_TOLERANCE = 0.15  # Sizes (or ratios) "match" within +-15 %.
COMPRESSED = ("prune", "quantize", "distill")


@dataclasses.dataclass(frozen=True)
class Spec:
  """One comparison: effect = min over terms of sum(coef * R(model))."""
  analysis: str
  label: str
  terms: Tuple[Tuple[Tuple[str, float], ...], ...]
  unit: str = ""  # e.g. the student, for counting distinct units.


def _matched(size: float, reference: float) -> bool:
  """|size / reference - 1| <= SIZE_TOLERANCE (False if either is unknown)."""
  if not (np.isfinite(size) and np.isfinite(reference)) or reference <= 0:
    return False
  return abs(size / reference - 1) <= SIZE_TOLERANCE + 1e-9


def _ratio(original: claims_data.Info, model: claims_data.Info) -> float:
  """Compression ratio original size / size (NaN if unknown)."""
  if not model.size_bits > 0:  # Also NaN.
    return float("nan")
  return original.size_bits / model.size_bits


def _family(info: claims_data.Info):
  """What must agree for two models to count as the "same method"."""
  s = info.setting
  if info.method == "prune":
    return ("prune", s.get("scope"), bool(s.get("structured")))
  if info.method == "quantize":
    return ("quantize", s.get("activation_bits"))
  return (info.method,)


def _specs_a(infos):
  specs = []
  for m in sorted(infos.values(), key=lambda m: m.model_id):
    o = infos.get(m.original_id or "")
    if m.method in COMPRESSED and o is not None:
      terms = (((o.model_id, 1.0), (m.model_id, -1.0)),)
      label = f"{m.model_id} vs {o.model_id}"
      specs.append(Spec("all compressed models", label, terms))
      specs.append(Spec(f"{m.method} only", label, terms))
  return specs


def _arch_sizes(infos):
  return {m.arch: (m.size_bits, m.model_id) for m in infos.values()
          if m.method == "original" and np.isfinite(m.size_bits)}


def _own_compressed(infos, arch):
  return [m for m in sorted(infos.values(), key=lambda m: m.model_id)
          if m.arch == arch and m.method in ("prune", "quantize")
          and infos.get(m.original_id or "") is not None
          and infos[m.original_id].arch == arch]


def _specs_b(infos):
  specs = []
  archs = sorted(_arch_sizes(infos).items(), key=lambda kv: kv[1][0])
  for i, (small, (size_s, orig_s)) in enumerate(archs):
    for large, (size_l, orig_l) in archs[i + 1:]:
      if size_l <= size_s:
        continue
      for l in _own_compressed(infos, large):
        for s in _own_compressed(infos, small):
          if _family(l) != _family(s):
            continue
          terms = (((orig_l, 1.0), (l.model_id, -1.0), (orig_s, -1.0),
                    (s.model_id, 1.0)),)
          label = (f"{l.model_id} ({l.size_bits / 8e3:.1f} kB) vs "
                   f"{s.model_id} ({s.size_bits / 8e3:.1f} kB)")
          if _matched(l.size_bits, s.size_bits):
            specs.append(Spec("size-matched", label, terms))
          if l.setting == s.setting:
            specs.append(Spec("same setting (sub-analysis)", label, terms))
        if _matched(l.size_bits, size_s):
          specs.append(Spec(
              "compressed L vs uncompressed S (sub-analysis)",
              f"{l.model_id} ({l.size_bits / 8e3:.1f} kB) vs {orig_s} "
              f"({size_s / 8e3:.1f} kB)",
              (((orig_s, 1.0), (l.model_id, -1.0)),)))
  return specs


def _specs_c(infos):
  specs = []
  ordered = sorted(infos.values(), key=lambda m: m.model_id)
  for st in ordered:
    if st.method != "distill" or not st.original_id:
      continue
    controls = [c for c in ordered if c.method == "distill_control"
                and c.arch == st.arch and c.original_id == st.original_id]
    pruned = [p for p in ordered if p.method == "prune"
              and p.original_id == st.original_id
              and _matched(p.size_bits, st.size_bits)]
    vs_p = {p.model_id: ((st.model_id, 1.0), (p.model_id, -1.0))
            for p in pruned}
    vs_c = {c.model_id: ((st.model_id, 1.0), (c.model_id, -1.0))
            for c in controls}
    for p, t in vs_p.items():
      specs.append(Spec("vs pruned teacher (sub-analysis)",
                        f"{st.model_id} vs {p}", (t,), st.model_id))
    for c, t in vs_c.items():
      specs.append(Spec("vs no-KD control (sub-analysis)",
                        f"{st.model_id} vs {c}", (t,), st.model_id))
      for p, tp in vs_p.items():
        specs.append(Spec("beats pruned teacher AND control (min)",
                          f"{st.model_id} vs {p} and {c}", (tp, t),
                          st.model_id))
  return specs


def _specs_d(infos):
  specs = []
  ordered = sorted(infos.values(), key=lambda m: m.model_id)
  for q in ordered:
    o = infos.get(q.original_id or "")
    if q.method != "quantize" or o is None:
      continue
    bits = q.setting.get("weight_bits")
    for p in ordered:
      if p.method in ("prune", "distill") and p.original_id == o.model_id \
          and _matched(_ratio(o, p), _ratio(o, q)):
        specs.append(Spec(
            f"int{bits}", f"{q.model_id} (x{_ratio(o, q):.1f})"
            f" vs {p.model_id} (x{_ratio(o, p):.1f})",
            (((q.model_id, 1.0), (p.model_id, -1.0)),)))
  return specs


@dataclasses.dataclass(frozen=True)
class ClaimDef:
  """A claim: statement, effect, deciding analysis, comparisons (`specs`)."""
  key: str
  statement: str
  effect: str  # the effect in R, positive = claimed
  effect_drop: str
  main: str  # analysis that decides the verdict
  specs: object


CLAIMS = (
    ClaimDef("a", "(a) Compressed models lose robustness (R lower than "
             "their uncompressed originals).",
             "R(original) - R(compressed)",
             "drop(compressed) - drop(original)", "all compressed models",
             _specs_a),
    ClaimDef("b", "(b) Larger networks lose more robustness, even when "
             "compressed to a similar size as smaller ones.",
             "lost(L) - lost(S), lost = R(own original) - R(compressed)",
             "extra drop(L) - extra drop(S), extra drop = drop(compressed) "
             "- drop(own original)", "size-matched", _specs_b),
    ClaimDef("c", "(c) Distilled students are more robust than pruned "
             "networks of the same size.",
             "min(R(student) - R(pruned teacher), R(student) - "
             "R(no-KD control))",
             "min(drop(pruned teacher) - drop(student), drop(control) - "
             "drop(student))", "beats pruned teacher AND control (min)",
             _specs_c),
    ClaimDef("d", "(d) 8-bit post-training quantization is the most robust "
             "compression.", "R(quantized) - R(pruned or distilled, same "
             "original, compression ratio within 15 %)",
             "drop(other) - drop(quantized)", "int8", _specs_d),
)


@dataclasses.dataclass
class Comparison:
  """One paired comparison for one shift type."""
  analysis: str
  label: str
  shift: str
  effect: stats.Estimate  # in R, positive = claimed direction
  effect_drop: stats.Estimate  # in accuracy (fraction), same orientation


@dataclasses.dataclass
class ShiftResult:
  """The pooled effect of one analysis and shift type."""
  analysis: str
  shift: str
  in_verdict: bool
  verdict: str  # supported | contradicted | inconclusive | not testable
  count: int  # number of comparisons pooled
  effect: Optional[stats.Estimate] = None
  effect_drop: Optional[stats.Estimate] = None


@dataclasses.dataclass
class Verdict:
  """The verdict on one claim, with every number that decided it."""
  claim: str  # the statement, starting with "(a)" .. "(d)"
  verdict: str  # supported | contradicted | mixed | inconclusive |
  #               not testable
  effect: str  # what the effect in R is (positive = claimed)
  effect_drop: str
  results: List[ShiftResult]
  comparisons: List[Comparison]
  notes: List[str]
