"""The comparisons that test the claims, and the records of their results.

For each claim, `CLAIMS` gives its statement, how its effect is oriented,
which analysis decides it and which comparisons (`Spec`s) the grid's models
allow: which models are paired, matched in size or compression ratio within
`SIZE_TOLERANCE` (rules: the `robustjax.study.claims` package docstring). A
claim's deciding analysis may have several *components* that must all hold
(an intersection-union test: (c) the student beats the pruned teacher AND
its no-KD control; (d) int8 PTQ beats the pruned AND the distilled models).
`Comparison`, `Cell` and `Verdict` record what `analysis.test_claims`
measured.
"""

import dataclasses
from typing import Dict, List, Optional, Tuple

import numpy as np

from robustjax.study.claims import data as data_lib
from robustjax.study.claims import inference

SIZE_TOLERANCE = 0.15  # Sizes (or ratios) "match" within +-15 %.
COMPRESSED = ("prune", "quantize", "distill")
REPLICATE = "replicate"  # The negative control's method.


@dataclasses.dataclass(frozen=True)
class Spec:
  """One comparison: effect = sum(coef * R(model)), positive = claimed.

  Attributes:
    analysis: the analysis it belongs to (the claim's deciding one or a
      labelled secondary one).
    label: what is compared, for the report.
    coefs: (model_id, coefficient) pairs.
    component: within the analysis, the part it pools into (every component
      of the deciding analysis must hold).
    unit: e.g. the student, for counting distinct units.
  """
  analysis: str
  label: str
  coefs: Tuple[Tuple[str, float], ...]
  component: str = ""
  unit: str = ""


def _matched(size: float, reference: float) -> bool:
  """|size / reference - 1| <= SIZE_TOLERANCE (False if either is unknown)."""
  if not (np.isfinite(size) and np.isfinite(reference)) or reference <= 0:
    return False
  return abs(size / reference - 1) <= SIZE_TOLERANCE + 1e-9


def _ratio(original: data_lib.Info, model: data_lib.Info) -> float:
  """Compression ratio original size / size (NaN if unknown)."""
  if not model.size_bits > 0:  # Also NaN.
    return float("nan")
  return original.size_bits / model.size_bits


def _family(info: data_lib.Info):
  """What must agree for two models to count as the "same method"."""
  s = info.setting
  if info.method == "prune":
    return ("prune", s.get("scope"), bool(s.get("structured")))
  if info.method == "quantize":
    return ("quantize", s.get("activation_bits"))
  return (info.method,)


def _ordered(infos):
  return sorted(infos.values(), key=lambda m: m.model_id)


def _specs_a(infos):
  specs = []
  for m in _ordered(infos):
    o = infos.get(m.original_id or "")
    if m.method in COMPRESSED and o is not None:
      coefs = ((o.model_id, 1.0), (m.model_id, -1.0))
      label = f"{m.model_id} vs {o.model_id}"
      specs.append(Spec("all compressed models", label, coefs))
      specs.append(Spec(f"{m.method} only", label, coefs))
  return specs


def _arch_sizes(infos):
  return {m.arch: (m.size_bits, m.model_id) for m in infos.values()
          if m.method == "original" and np.isfinite(m.size_bits)}


def _own_compressed(infos, arch):
  return [m for m in _ordered(infos)
          if m.arch == arch and m.method in ("prune", "quantize")
          and infos.get(m.original_id or "") is not None
          and infos[m.original_id].arch == arch]


def _kb(info) -> str:
  return f"{info.model_id} ({info.size_bits / 8e3:.1f} kB)"


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
          lost = ((orig_l, 1.0), (l.model_id, -1.0), (orig_s, -1.0),
                  (s.model_id, 1.0))
          label = f"{_kb(l)} vs {_kb(s)}"
          if _matched(l.size_bits, s.size_bits):
            specs.append(Spec("size-matched", label, lost))
            specs.append(Spec(
                "absolute R at equal size (secondary)", label,
                ((s.model_id, 1.0), (l.model_id, -1.0))))
          if l.setting == s.setting:
            specs.append(Spec("same setting (secondary)", label, lost))
        if _matched(l.size_bits, size_s):
          specs.append(Spec(
              "compressed L vs uncompressed S (secondary)",
              f"{_kb(l)} vs {orig_s} ({size_s / 8e3:.1f} kB)",
              ((orig_s, 1.0), (l.model_id, -1.0))))
  return specs


def _specs_c(infos):
  specs = []
  ordered = _ordered(infos)
  for st in ordered:
    if st.method != "distill" or not st.original_id:
      continue
    controls = [c for c in ordered if c.method == "distill_control"
                and c.arch == st.arch and c.original_id == st.original_id]
    pruned = [p for p in ordered if p.method == "prune"
              and p.original_id == st.original_id
              and _matched(p.size_bits, st.size_bits)]
    if not (controls and pruned):
      continue  # The claim needs both references of this student.
    for p in pruned:
      specs.append(Spec(MAIN_C, f"{st.model_id} vs {p.model_id}",
                        ((st.model_id, 1.0), (p.model_id, -1.0)),
                        "vs pruned teacher", st.model_id))
    for c in controls:
      specs.append(Spec(MAIN_C, f"{st.model_id} vs {c.model_id}",
                        ((st.model_id, 1.0), (c.model_id, -1.0)),
                        "vs no-KD control", st.model_id))
  return specs


def _specs_d(infos):
  specs = []
  ordered = _ordered(infos)
  for q in ordered:
    o = infos.get(q.original_id or "")
    if q.method != "quantize" or o is None:
      continue
    bits = q.setting.get("weight_bits")
    analysis = MAIN_D if bits == 8 else f"int{bits} (secondary)"
    for p in ordered:
      if p.method in ("prune", "distill") and p.original_id == o.model_id \
          and _matched(_ratio(o, p), _ratio(o, q)):
        specs.append(Spec(
            analysis, f"{q.model_id} (x{_ratio(o, q):.1f})"
            f" vs {p.model_id} (x{_ratio(o, p):.1f})",
            ((q.model_id, 1.0), (p.model_id, -1.0)),
            "vs pruned" if p.method == "prune" else "vs distilled"))
    if bits == 8:
      specs.append(Spec(EQUIVALENCE_D, f"{q.model_id} vs {o.model_id}",
                        ((q.model_id, 1.0), (o.model_id, -1.0))))
  return specs


def specs_control(infos) -> List[Spec]:
  """The negative control: each original vs its independent replicate.

  Oriented like claim (a): R(original) - R(replicate). Both are trained the
  same way, so the true effect is zero.
  """
  return [Spec("negative control", f"{o.model_id} vs {m.model_id}",
               ((o.model_id, 1.0), (m.model_id, -1.0)))
          for m in _ordered(infos) if m.method == REPLICATE
          for o in [infos.get(m.original_id or "")] if o is not None]


MAIN_C = "beats pruned teacher AND control"
MAIN_D = "int8"
EQUIVALENCE_D = "int8 equivalent to its original (TOST, secondary)"


@dataclasses.dataclass(frozen=True)
class ClaimDef:
  """A claim: statement, effect, deciding analysis, comparisons (`specs`)."""
  key: str
  statement: str
  effect: str  # the effect in R, positive = claimed
  effect_drop: str
  main: str  # analysis that decides the verdict
  specs: object
  components: Tuple[str, ...] = ("",)  # of `main`; all must hold


CLAIMS = (
    ClaimDef("a", "(a) Compressed models lose robustness (R lower than "
             "their uncompressed originals).",
             "R(original) - R(compressed)",
             "drop(compressed) - drop(original)", "all compressed models",
             _specs_a),
    ClaimDef("b", "(b) Larger networks lose more robustness, even when "
             "compressed to a similar size as smaller ones.",
             "lost(L) - lost(S), lost = R(own original) - R(compressed), "
             "L and S compressed to within 15 % of the same size",
             "extra drop(L) - extra drop(S), extra drop = drop(compressed) "
             "- drop(own original)", "size-matched", _specs_b),
    ClaimDef("c", "(c) Distilled students are more robust than pruned "
             "networks of the same size.",
             "min(R(student) - R(teacher pruned to its size), R(student) - "
             "R(no-KD control))",
             "min(drop(pruned teacher) - drop(student), drop(control) - "
             "drop(student))", MAIN_C, _specs_c,
             ("vs pruned teacher", "vs no-KD control")),
    ClaimDef("d", "(d) 8-bit post-training quantization is the most robust "
             "compression.", "min(R(int8) - R(pruned), R(int8) - "
             "R(distilled)), same original, compression ratio within 15 %",
             "min(drop(pruned) - drop(int8), drop(distilled) - drop(int8))",
             MAIN_D, _specs_d, ("vs pruned", "vs distilled")),
)


@dataclasses.dataclass
class Comparison:
  """One paired comparison for one shift type (uncorrected interval)."""
  analysis: str
  label: str
  shift: str
  effect: inference.Estimate  # in R, positive = claimed direction
  effect_drop: inference.Estimate  # in accuracy (fraction), same orientation


@dataclasses.dataclass
class Cell:
  """One analysis of one claim on one shift type.

  Attributes:
    analysis: the analysis (the claim's deciding one, or a labelled
      secondary one).
    shift: the shift type.
    primary: whether the shift type is a primary endpoint.
    in_verdict: whether the cell enters the claim's overall verdict (the
      deciding analysis on a primary shift type).
    verdict: supported | contradicted | inconclusive | not testable (for the
      TOST line: equivalent | not shown equivalent).
    count: number of comparisons pooled.
    alpha: the two-sided level its interval was built at (after the family's
      correction and, for several components, their split).
    effect: the effect in R with its interval at `alpha` (the minimum over
      components for an intersection-union test).
    effect_drop: the same for the accuracy drop.
    components: component name -> its `inference.Effect` (in R).
    mde: smallest true effect detected with 80 % power at `alpha`.
    mde_10: the same for a study with 10 seeds.
  """
  analysis: str
  shift: str
  primary: bool
  in_verdict: bool
  verdict: str
  count: int = 0
  alpha: float = float("nan")
  effect: Optional[inference.Estimate] = None
  effect_drop: Optional[inference.Estimate] = None
  components: Dict[str, inference.Effect] = dataclasses.field(
      default_factory=dict)
  mde: float = float("nan")
  mde_10: float = float("nan")


@dataclasses.dataclass
class Verdict:
  """The verdict on one claim, with every number that decided it."""
  key: str  # "a" .. "d"
  claim: str  # the statement, starting with "(a)" .. "(d)"
  verdict: str  # supported | contradicted | mixed | inconclusive |
  #               not testable
  effect: str  # what the effect in R is (positive = claimed)
  effect_drop: str
  cells: List[Cell]  # The deciding analysis's first, one per shift type.
  comparisons: List[Comparison]
  notes: List[str]

  @property
  def deciding(self) -> Dict[str, Cell]:
    """shift type -> the cell of the analysis that decides the claim."""
    main = self.cells[0].analysis if self.cells else None
    return {c.shift: c for c in self.cells if c.analysis == main}
