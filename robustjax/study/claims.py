"""Tests the four claims of Shen et al. (2024) with paired bootstrap intervals.

Claims (arXiv 2401.12014): (a) compressed models lose robustness; (b) larger
networks lose more robustness, even when compressed to a similar size as the
smaller ones; (c) distilled students are more robust than pruned networks of
the same size; (d) 8-bit post-training quantization (PTQ) is the most robust
compression.

Input: `StudyData(rows, examples)` -- the result rows and, per (model_id,
seed, shift, name) cell, the per-example correctness [levels, n].

Quantities, per model, seed and shift type T (domain | corruption |
adversarial):
* clean accuracy on the SAME examples as T's cells (the first n source test
  examples for corruption and adversarial; the whole source test split for
  domain, whose target splits are other example sets);
* shifted accuracy = mean over T's cells and levels; R = shifted / clean,
  drop = clean - shifted. Seeds are averaged before the ratio is taken.
* adversarial: per threat model (L2 if "l2" is in the attack's name, else
  L-inf) and eps, an example counts as robust only if EVERY attack of that
  threat model failed on it (transfer attacks included); eps = 0 is not a
  shift; an eps at which every model is at 0 % is listed in the notes and
  left out of R.
* Cells, levels, examples and seeds are those that every model with data for
  T shares (pairing needs the same ones); anything dropped is noted.

Effects are oriented so that POSITIVE = THE WAY THE PAPER CLAIMS:
* (a) each compressed model (prune, quantize, distill) vs its own original:
  R(original) - R(compressed).
* (b) each pair of architectures S < L (by their originals' size_bits), same
  method (and, for pruning, the same scope and structure), L compressed to
  within 15 % of S-compressed's size_bits: lost(L) - lost(S) with
  lost = R(own original) - R(compressed). All architecture pairs enter (with
  three or more architectures "larger" is a trend). Two labelled
  sub-analyses do NOT enter the verdict: the same setting (e.g. the same
  sparsity %) regardless of size, and compressed L vs the uncompressed S
  within 15 % of its size (R(S original) - R(L compressed)).
* (c) each student (distill) vs its teacher pruned to within 15 % of the
  student's size, AND vs its no-KD control (distill_control, same arch and
  teacher): the effect is min(R(student) - R(pruned teacher),
  R(student) - R(control)) per replicate, so it is positive only where the
  student beats both (credit goes to distillation, not to the small
  architecture). The two parts are reported as sub-analyses. Fewer than two
  students cap the overall verdict at inconclusive (one student is one
  architecture, not a trend).
* (d) each quantize model vs every prune or distill model of the same
  original whose compression ratio (original size / size) is within 15 %:
  R(quantized) - R(other). The verdict uses int8 weights; other bit widths
  (int4) are separate, labelled analyses.
Size matching: |size_a / size_b - 1| <= 0.15 with b the reference named
above. Every effect is also given on the accuracy drop, oriented the same
way (e.g. (a): drop(compressed) - drop(original), in accuracy points).

Statistics (robustjax.study.stats): per shift type, all models' per-example
vectors go through one paired hierarchical bootstrap (seeds, then examples
within each example set, with replacement; B = 2000 by default, seeded), so
every comparison and every pooled effect is computed on the same resampled
seeds and examples. A claim's pooled effect for a shift type is the mean of
its comparisons' effects; intervals are 95 % percentile intervals.

Verdicts per claim and shift type: *supported* if the pooled interval of the
effect in R lies above zero, *contradicted* if it lies below zero,
*inconclusive* otherwise (including an undefined R), *not testable* if the
grid has no comparison. Overall, per claim (its main analysis only):
*supported* if some shift type is supported and none contradicted,
*contradicted* if some is contradicted and none supported, *mixed* if both
occur, *inconclusive* if every testable shift type is inconclusive, *not
testable* if none is testable. The three shift types are not corrected for
multiplicity: "supported on one of three" is a weaker statement than its
95 % interval alone suggests, which is why the table shows all three.
"""

import collections
import dataclasses
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from robustjax.robustness import metrics
from robustjax.study import stats

SHIFTS = ("domain", "corruption", "adversarial")
SIZE_TOLERANCE = 0.15  # Sizes (or ratios) "match" within +-15 %.
MIN_STUDENTS = 2  # (c) needs this many students for a general verdict.
COMPRESSED = ("prune", "quantize", "distill")

ExampleKey = Tuple[str, int, str, str]  # (model_id, seed, shift, name)


@dataclasses.dataclass(frozen=True)
class StudyData:
  """Result rows plus per-example correctness.

  Attributes:
    rows: result rows (model_id, seed, arch, method, setting, size_bits,
      sparsity, original_id, shift, name, level, accuracy, n). A row without
      `seed` counts as seed 0.
    examples: (model_id, seed, shift, name) -> bool array [levels, n], the
      levels in ascending order of the rows' levels.
  """
  rows: Sequence[dict]
  examples: Mapping[ExampleKey, np.ndarray]


def make_study_data(models: Mapping[str, dict]) -> StudyData:
  """Builds a `StudyData` from hand-made per-example arrays (for tests).

  Args:
    models: model_id -> dict with `arch`, `method`, `size_bits`, optional
      `original_id`, `setting` (dict) and `sparsity`, and `cells`:
      (seed, shift, name) -> {level: bool array [n]} (level None for clean
      and domain cells).

  Returns:
    The rows (accuracy = mean of each array) and the examples.
  """
  rows, examples = [], {}
  for model_id, m in models.items():
    head = dict(model_id=model_id, arch=m["arch"], method=m["method"],
                setting=dict(m.get("setting") or {}),
                size_bits=m["size_bits"], sparsity=m.get("sparsity", 0.0),
                original_id=m.get("original_id"))
    for (seed, shift, name), levels in m["cells"].items():
      order = sorted(levels, key=lambda lv: -np.inf if lv is None else lv)
      arr = np.stack([np.asarray(levels[lv], bool) for lv in order])
      examples[(model_id, seed, shift, name)] = arr
      rows += [dict(head, seed=seed, shift=shift, name=name, level=lv,
                    accuracy=float(a.mean()), n=int(a.size))
               for lv, a in zip(order, arr)]
  return StudyData(rows, examples)


# Point summaries from rows alone (the report's model table and plots).


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
  mean: Dict[str, float]  # shift type -> mean accuracy (mean over seeds).
  robustness: Dict[str, float]  # shift type -> R from the rows.


def summarize_models(rows: Sequence[dict]) -> Dict[str, ModelSummary]:
  """Per model: clean, mean accuracy and R per shift type from the rows.

  A descriptive summary (each attack counted on its own, means over seeds);
  the claims use the per-example worst case over attacks instead.
  """
  by_model = collections.defaultdict(lambda: collections.defaultdict(list))
  for r in rows:
    by_model[r["model_id"]][r.get("seed", 0)].append(r)
  out = {}
  for model_id, seeds in by_model.items():
    first = next(iter(seeds.values()))[0]
    per_seed = [metrics.summarize(rs) for rs in seeds.values()]
    avg = {k: float(np.mean([s[k] for s in per_seed])) for k in per_seed[0]}
    out[model_id] = ModelSummary(
        model_id=model_id, arch=first["arch"], method=first["method"],
        setting=first.get("setting") or {},
        size_bits=float(first.get("size_bits") or np.nan),
        sparsity=float(first.get("sparsity") or 0.0),
        original_id=first.get("original_id"), clean=avg["clean"],
        mean={k: avg[k] for k in SHIFTS},
        robustness={k: avg[f"{k}_relative"] for k in SHIFTS})
  return out


# Per-example tables.


@dataclasses.dataclass(frozen=True)
class _Info:
  model_id: str
  arch: str
  method: str
  setting: dict
  size_bits: float
  original_id: Optional[str]


def _infos(rows) -> Dict[str, _Info]:
  out = {}
  for r in rows:
    if r["model_id"] not in out:
      size = r.get("size_bits")
      out[r["model_id"]] = _Info(
          r["model_id"], r["arch"], r["method"], dict(r.get("setting") or {}),
          float(size) if size is not None else float("nan"),
          r.get("original_id"))
  return out


def _cells(data: StudyData):
  """(model, seed, shift) -> {name: (levels, bool [levels, n])}; missing."""
  levels = collections.defaultdict(dict)
  for r in data.rows:
    k = (r["model_id"], r.get("seed", 0), r["shift"], r["name"])
    levels[k][r["level"]] = r["accuracy"]
  cells = collections.defaultdict(dict)
  missing = set()
  for k, by_level in levels.items():
    if k not in data.examples:
      missing.add(k[0])
      continue
    lv = sorted(by_level, key=lambda x: -np.inf if x is None else x)
    arr = np.asarray(data.examples[k], bool)
    if arr.ndim != 2 or arr.shape[0] != len(lv):
      raise ValueError(
          f"examples[{k}] has shape {arr.shape}, but the rows list "
          f"{len(lv)} levels {lv}: per-example arrays must be "
          "[num_levels, n], levels in ascending order.")
    acc = np.array([by_level[x] for x in lv])
    if np.abs(arr.mean(axis=1) - acc).max() > 1e-5:
      raise ValueError(
          f"examples[{k}] disagrees with its rows: per-level accuracy "
          f"{arr.mean(axis=1).round(4).tolist()} vs rows "
          f"{acc.round(4).tolist()} (levels {lv}); are the levels sorted "
          "ascending and is it the same evaluation?")
    cells[k[:3]][k[3]] = (tuple(lv), arr)
  return cells, missing


def _norm(attack: str) -> str:
  return "l2" if "l2" in attack else "linf"


def _worst_case(attacks, names, common, n):
  """(norm, eps) -> bool [n]: robust only if every attack failed."""
  out = {}
  for name in names:
    levels, arr = attacks[name]
    for i, eps in enumerate(levels):
      if eps and eps in common[name]:
        k = (_norm(name), eps)
        out[k] = out[k] & arr[i, :n] if k in out else arr[i, :n]
  return out


@dataclasses.dataclass
class _Table:
  """Per-example contributions of every model for one shift type."""
  shift: str
  models: List[str]
  seeds: List[int]
  x: np.ndarray  # [examples, seeds, models, 2 (clean, shifted)]
  set_sizes: List[int]
  notes: List[str]


def _table(shift: str, cells) -> Optional[_Table]:
  """Builds the bootstrap input of one shift type, or None without data."""
  have = collections.defaultdict(set)
  for (m, seed, s) in cells:
    if s == shift and (m, seed, "clean") in cells and \
        "source" in cells[(m, seed, "clean")]:
      have[m].add(seed)
  if not have:
    return None
  notes = []
  models = sorted(have)
  seeds = sorted(set.intersection(*have.values()))
  dropped = sorted(set.union(*have.values()) - set(seeds))
  if dropped:
    notes.append(f"{shift}: seeds {dropped} left out (not every model has "
                 f"them); seeds used: {seeds}.")
  if not seeds:
    notes.append(f"{shift}: no seed is shared by every model; not testable.")
    return None
  keys = [(m, s) for m in models for s in seeds]
  shifted = {k: cells[(k[0], k[1], shift)] for k in keys}
  clean = {k: cells[(k[0], k[1], "clean")]["source"][1][0] for k in keys}
  names = sorted(set.intersection(*[set(v) for v in shifted.values()]))
  all_names = set.union(*[set(v) for v in shifted.values()])
  if all_names - set(names):
    notes.append(f"{shift}: cells {sorted(all_names - set(names))} left out "
                 "(not every model has them).")
  if not names:
    notes.append(f"{shift}: no cell is shared by every model; not testable.")
    return None
  common = {nm: set.intersection(*[set(v[nm][0]) for v in shifted.values()])
            for nm in names}
  n_clean = min(len(c) for c in clean.values())
  if shift == "domain":
    n_t = {nm: min(v[nm][1].shape[1] for v in shifted.values())
           for nm in names}
    sizes = [n_clean] + [n_t[nm] for nm in names]
    x = np.zeros((sum(sizes), len(seeds), len(models), 2), np.float64)
    for (m, s), v in shifted.items():
      i, j = models.index(m), seeds.index(s)
      x[:n_clean, j, i, 0] = clean[(m, s)][:n_clean] / n_clean
      row = n_clean
      for nm in names:
        x[row:row + n_t[nm], j, i, 1] = v[nm][1][0, :n_t[nm]] / (
            len(names) * n_t[nm])
        row += n_t[nm]
    return _Table(shift, models, seeds, x, sizes, notes)
  n = min([n_clean] + [v[nm][1].shape[1] for v in shifted.values()
                       for nm in names])
  if shift == "adversarial":
    levels = {k: _worst_case(v, names, common, n) for k, v in shifted.items()}
    cols = sorted(set.intersection(*[set(v) for v in levels.values()]))
    zero = [c for c in cols if not any(v[c].any() for v in levels.values())]
    if zero:
      notes.append("adversarial: every model is at 0 % at " + ", ".join(
          f"{nm} eps={eps:g}" for nm, eps in zero) +
                   "; left out of R (no model is distinguishable there).")
    cols = [c for c in cols if c not in zero]
    stacks = {k: np.stack([v[c] for c in cols]) if cols else None
              for k, v in levels.items()}
    notes.append("adversarial: R over " + (", ".join(
        f"{nm} eps={eps:g}" for nm, eps in cols) or "nothing") +
                 f" (worst case over attacks {names}), first {n} examples.")
  else:
    stacks = {k: np.concatenate([v[nm][1][[v[nm][0].index(lv) for lv in
                                           sorted(common[nm])], :n]
                                 for nm in names]) if names else None
              for k, v in shifted.items()}
  if any(v is None or not v.size for v in stacks.values()):
    return None
  x = np.zeros((n, len(seeds), len(models), 2), np.float64)
  for (m, s), arr in stacks.items():
    i, j = models.index(m), seeds.index(s)
    x[:, j, i, 0] = clean[(m, s)][:n] / n
    x[:, j, i, 1] = arr.mean(axis=0) / n
  return _Table(shift, models, seeds, x, [n], notes)


def robustness(data: StudyData) -> Dict[str, Dict[str, Tuple[float, ...]]]:
  """The point estimates the claims are computed from.

  Args:
    data: the study's rows and per-example correctness.

  Returns:
    model_id -> shift type -> (clean accuracy, shifted accuracy, R), on the
    examples, cells and seeds that every model with that shift type shares
    (adversarial: worst case over attacks; see the module docstring),
    averaged over seeds.
  """
  cells, _ = _cells(data)
  out = collections.defaultdict(dict)
  for shift in SHIFTS:
    t = _table(shift, cells)
    if t is None:
      continue
    v = t.x.sum(axis=0).mean(axis=0)  # [models, 2]
    for m, (clean, shifted) in zip(t.models, v):
      out[m][shift] = (clean, shifted,
                       shifted / clean if clean > 0 else float("nan"))
  return dict(out)


# Comparisons.


@dataclasses.dataclass(frozen=True)
class _Spec:
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


def _ratio(original: _Info, model: _Info) -> float:
  """Compression ratio original size / size (NaN if unknown)."""
  if not model.size_bits > 0:  # Also NaN.
    return float("nan")
  return original.size_bits / model.size_bits


def _family(info: _Info):
  """What must agree for two models to count as the "same method"."""
  s = info.setting
  if info.method == "prune":
    return ("prune", s.get("scope"), bool(s.get("structured")))
  if info.method == "quantize":
    return ("quantize", s.get("activation_bits"))
  return (info.method,)


def _setting_text(info: _Info) -> str:
  return ", ".join(f"{k}={v}" for k, v in sorted(info.setting.items()))


def _specs_a(infos):
  specs = []
  for m in sorted(infos.values(), key=lambda m: m.model_id):
    o = infos.get(m.original_id or "")
    if m.method in COMPRESSED and o is not None:
      terms = (((o.model_id, 1.0), (m.model_id, -1.0)),)
      label = f"{m.model_id} vs {o.model_id}"
      specs.append(_Spec("all compressed models", label, terms))
      specs.append(_Spec(f"{m.method} only", label, terms))
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
            specs.append(_Spec("size-matched", label, terms))
          if l.setting == s.setting:
            specs.append(_Spec("same setting (sub-analysis)", label, terms))
        if _matched(l.size_bits, size_s):
          specs.append(_Spec(
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
      specs.append(_Spec("vs pruned teacher (sub-analysis)",
                         f"{st.model_id} vs {p}", (t,), st.model_id))
    for c, t in vs_c.items():
      specs.append(_Spec("vs no-KD control (sub-analysis)",
                         f"{st.model_id} vs {c}", (t,), st.model_id))
      for p, tp in vs_p.items():
        specs.append(_Spec("beats pruned teacher AND control (min)",
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
        specs.append(_Spec(
            f"int{bits}", f"{q.model_id} (x{_ratio(o, q):.1f})"
            f" vs {p.model_id} (x{_ratio(o, p):.1f})",
            (((q.model_id, 1.0), (p.model_id, -1.0)),)))
  return specs


@dataclasses.dataclass(frozen=True)
class _ClaimDef:
  key: str
  statement: str
  effect: str  # the effect in R, positive = claimed
  effect_drop: str
  main: str  # analysis that decides the verdict
  specs: object


_CLAIMS = (
    _ClaimDef("a", "(a) Compressed models lose robustness (R lower than "
              "their uncompressed originals).",
              "R(original) - R(compressed)",
              "drop(compressed) - drop(original)", "all compressed models",
              _specs_a),
    _ClaimDef("b", "(b) Larger networks lose more robustness, even when "
              "compressed to a similar size as smaller ones.",
              "lost(L) - lost(S), lost = R(own original) - R(compressed)",
              "extra drop(L) - extra drop(S), extra drop = drop(compressed) "
              "- drop(own original)", "size-matched", _specs_b),
    _ClaimDef("c", "(c) Distilled students are more robust than pruned "
              "networks of the same size.",
              "min(R(student) - R(pruned teacher), R(student) - "
              "R(no-KD control))",
              "min(drop(pruned teacher) - drop(student), drop(control) - "
              "drop(student))", "beats pruned teacher AND control (min)",
              _specs_c),
    _ClaimDef("d", "(d) 8-bit post-training quantization is the most robust "
              "compression.", "R(quantized) - R(pruned or distilled, same "
              "original, compression ratio within 15 %)",
              "drop(other) - drop(quantized)", "int8", _specs_d),
)


# Results.


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


def _decide(est: Optional[stats.Estimate]) -> str:
  if est is None:
    return "not testable"
  return {1: "supported", -1: "contradicted", 0: "inconclusive"}[est.sign]


def _overall(results: Sequence[ShiftResult]) -> str:
  verdicts = [r.verdict for r in results if r.in_verdict]
  sup, con = "supported" in verdicts, "contradicted" in verdicts
  if sup and con:
    return "mixed"
  if sup or con:
    return "supported" if sup else "contradicted"
  if "inconclusive" in verdicts:
    return "inconclusive"
  return "not testable"


def _effects(specs, models, r_point, r_reps, nd_point, nd_reps):
  """Per comparison and pooled: (point, replicates) in R and -drop."""
  idx = {m: i for i, m in enumerate(models)}
  t_max = max(len(s.terms) for s in specs)
  coef = np.zeros((len(specs), t_max, len(models)))
  for k, s in enumerate(specs):
    terms = s.terms + (s.terms[-1],) * (t_max - len(s.terms))
    for t, term in enumerate(terms):
      for m, c in term:
        coef[k, t, idx[m]] += c
  out = []
  for point, reps in ((r_point, r_reps), (nd_point, nd_reps)):
    p = np.einsum("ktm,m->kt", coef, point).min(axis=1)
    b = np.einsum("ktm,bm->bkt", coef, reps).min(axis=2)
    out.append((p, b, p.mean(), b.mean(axis=1)))
  return out


def _quantities(table: _Table, seed: int, num_replicates: int):
  """R and -drop per model: point [M] and replicates [B, M]."""
  m, s = len(table.models), len(table.seeds)
  x = table.x.reshape(table.x.shape[0], s, m * 2)
  point, reps = stats.bootstrap_means(
      x, table.set_sizes, stats.key_for(seed, table.shift), num_replicates)
  point, reps = point.reshape(m, 2), reps.reshape(-1, m, 2)

  def ratio(v):
    clean, shifted = v[..., 0].astype(np.float64), v[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
      return np.where(clean > 0, shifted / clean, np.nan)
  return (ratio(point), ratio(reps), point[:, 1] - point[:, 0],
          reps[..., 1] - reps[..., 0])


def test_claims(data: StudyData, seed: int = 0,
                num_replicates: int = stats.DEFAULT_REPLICATES
                ) -> List[Verdict]:
  """All four verdicts for a study (rules: the module docstring).

  Args:
    data: the study's rows and per-example correctness (`StudyData`).
    seed: bootstrap seed; the same seed gives the same intervals.
    num_replicates: bootstrap replicates B.

  Returns:
    One `Verdict` per claim, (a) to (d).
  """
  if not isinstance(data, StudyData):
    raise TypeError("test_claims takes a claims.StudyData(rows, examples), "
                    f"got {type(data).__name__}; wrap rows without "
                    "per-example data as StudyData(rows, {}).")
  infos = _infos(data.rows)
  cells, missing = _cells(data)
  common_notes = []
  if missing:
    common_notes.append(
        "No per-example correctness for " + ", ".join(sorted(missing)) +
        ": their comparisons are left out (not testable without it).")
  tables = {s: _table(s, cells) for s in SHIFTS}
  quantities = {s: _quantities(t, seed, num_replicates)
                for s, t in tables.items() if t is not None}
  for t in tables.values():
    common_notes += t.notes if t is not None else []
  verdicts = []
  for claim in _CLAIMS:
    specs = claim.specs(infos)
    analyses = list(dict.fromkeys([claim.main] + [s.analysis for s in specs]))
    results, comparisons = [], []
    notes = list(common_notes)
    for analysis in analyses:
      for shift in SHIFTS:
        mine = [s for s in specs if s.analysis == analysis]
        table = tables[shift]
        usable = [s for s in mine if table is not None and all(
            m in table.models for term in s.terms for m, _ in term)]
        res = ShiftResult(analysis, shift, analysis == claim.main,
                          "not testable", len(usable))
        results.append(res)
        if not usable:
          continue
        (p, b, pp, pb), (dp, db, dpp, dpb) = _effects(
            usable, table.models, *quantities[shift])
        eff = stats.estimates(p, b)
        eff_drop = stats.estimates(dp, db)
        for s, e, ed in zip(usable, eff, eff_drop):
          comparisons.append(Comparison(analysis, s.label, shift, e, ed))
        res.effect = stats.estimates(np.array([pp]), pb[:, None])[0]
        res.effect_drop = stats.estimates(np.array([dpp]), dpb[:, None])[0]
        res.verdict = _decide(res.effect)
    overall = _overall(results)
    if claim.key == "c":
      students = {s.unit for s in specs if s.analysis == claim.main}
      if len(students) < MIN_STUDENTS and overall not in ("not testable",):
        notes.append(f"Only {len(students)} student(s) ({sorted(students)})"
                     f": the claim is about students in general, so the "
                     f"overall verdict needs >= {MIN_STUDENTS}; it is "
                     f"capped at inconclusive (was {overall}).")
        overall = "inconclusive"
    if not specs:
      notes.append("The grid has no comparison for this claim.")
    verdicts.append(Verdict(claim.statement, overall, claim.effect,
                            claim.effect_drop, results, comparisons, notes))
  return verdicts


# Sanity checks on the adversarial evaluation.


def _adversarial_checks(cells):
  """(message, per-example difference) pairs; a positive mean is a flag."""
  checks = []
  for (m, seed, shift), attacks in sorted(cells.items()):
    if shift != "adversarial":
      continue
    who = f"{m} (seed {seed})"
    fgsm = attacks.get("fgsm")
    for name, (levels, arr) in sorted(attacks.items()):
      if fgsm is not None and name.startswith("pgd") and \
          _norm(name) == "linf":
        for i, eps in enumerate(levels):
          if eps and eps in fgsm[0]:
            j = fgsm[0].index(eps)
            n = min(arr.shape[1], fgsm[1].shape[1])
            checks.append((f"{who}: {name} accuracy is above FGSM's at "
                           f"eps={eps:g} (PGD should be at least as strong; "
                           "check its steps, step size and restarts)",
                           arr[i, :n].astype(np.float32) - fgsm[1][j, :n]))
      for i in range(len(levels) - 1):
        checks.append((f"{who}: {name} accuracy rises from eps="
                       f"{levels[i]:g} to eps={levels[i + 1]:g}",
                       arr[i + 1].astype(np.float32) - arr[i]))
      if name.startswith("transfer"):
        white = sorted(a for a in attacks if not a.startswith("transfer")
                       and _norm(a) == _norm(name))
        for i, eps in enumerate(levels):
          rows = [attacks[a][1][attacks[a][0].index(eps)] for a in white
                  if eps and eps in attacks[a][0]]
          if not rows:
            continue
          n = min([arr.shape[1]] + [r.shape[0] for r in rows])
          robust = np.logical_and.reduce([r[:n] for r in rows])
          checks.append((f"{who}: possible gradient masking: {name} "
                         "(transfer from the float original) beats the "
                         f"white-box attacks {white} at eps={eps:g}",
                         robust.astype(np.float32) - arr[i, :n]))
  return checks


def sanity_checks(data: StudyData, seed: int = 0,
                  num_replicates: int = stats.DEFAULT_REPLICATES
                  ) -> List[str]:
  """Flags adversarial results that look wrong, beyond sampling noise.

  Per model and seed: PGD-Linf accuracy above FGSM's at the same eps;
  accuracy rising with eps (per attack); a transfer attack (name starting
  with "transfer") with lower accuracy than every white-box attack of its
  threat model together (a sign of gradient masking). A check is flagged
  only when the paired bootstrap interval (over examples) of the difference
  lies above zero.

  Args:
    data: the study's rows and per-example correctness.
    seed: bootstrap seed.
    num_replicates: bootstrap replicates.

  Returns:
    One line per flag (empty when nothing is flagged).
  """
  cells, _ = _cells(data)
  by_n = collections.defaultdict(list)
  for msg, diff in _adversarial_checks(cells):
    by_n[diff.shape[0]].append((msg, diff))
  flags = []
  for n, checks in sorted(by_n.items()):
    diffs = np.stack([d for _, d in checks], axis=1)
    ests = stats.paired_mean_difference(
        diffs, stats.key_for(seed, f"sanity/{n}"), num_replicates)
    for (msg, _), e in zip(checks, ests):
      if e.sign > 0:
        flags.append(f"{msg}: difference {100 * e.value:+.1f} points, 95 % "
                     f"CI [{100 * e.lo:+.1f}, {100 * e.hi:+.1f}] over {n} "
                     "examples.")
  return flags


# Markdown.


def _fmt(e: Optional[stats.Estimate], scale: float = 1.0,
         digits: int = 3) -> str:
  if e is None or not np.isfinite(e.value):
    return "n/a"
  if not (np.isfinite(e.lo) and np.isfinite(e.hi)):
    return f"{scale * e.value:+.{digits}f} [n/a]"
  return (f"{scale * e.value:+.{digits}f} [{scale * e.lo:+.{digits}f}, "
          f"{scale * e.hi:+.{digits}f}]")


def render_markdown(verdicts: Sequence[Verdict],
                    checks: Optional[Sequence[str]] = None) -> str:
  """The report's claims section (Markdown).

  Args:
    verdicts: from `test_claims`.
    checks: optional lines from `sanity_checks`, listed at the end.

  Returns:
    The section: per claim a table (shift type, pooled effect in R and in
    accuracy drop with 95 % intervals, verdict, number of comparisons), its
    notes, then its comparisons.
  """
  shared = [n for n in (verdicts[0].notes if verdicts else [])
            if all(n in v.notes for v in verdicts)]
  out = ["## Claims of Shen et al. (2024), tested on these results", "",
         "Each effect is a paired difference (same examples, same seeds), "
         "oriented so that **positive = the direction the paper claims**, "
         "with a 95 % paired bootstrap interval (seeds, then examples, "
         "resampled). R = shifted accuracy / clean accuracy on the same "
         "examples; drop = clean - shifted, in accuracy points. Verdict per "
         "shift type: supported / contradicted when the pooled interval of "
         "the effect in R excludes zero, inconclusive otherwise. Rules: "
         "`robustjax/study/claims.py`.", ""]
  out += [f"- {n}" for n in shared] + ([""] if shared else [])
  for v in verdicts:
    out += [f"### {v.claim}", "",
            f"**{v.verdict.upper()}**. Effect in R: {v.effect}. Effect in "
            f"drop: {v.effect_drop}.", "",
            "| analysis | shift type | effect in R [95 % CI] | effect in "
            "drop, points [95 % CI] | verdict | comparisons |",
            "|---|---|---|---|---|---|"]
    for r in v.results:
      if r.in_verdict or r.count:
        name = f"**{r.analysis}** (verdict)" if r.in_verdict else r.analysis
        out.append(f"| {name} | {r.shift} | {_fmt(r.effect)} | "
                   f"{_fmt(r.effect_drop, 100, 1)} | {r.verdict} | "
                   f"{r.count} |")
    out.append("")
    out += [f"- {n}" for n in v.notes if n not in shared]
    order = list(dict.fromkeys(r.analysis for r in v.results))
    seen, listed = set(), []
    for c in sorted(v.comparisons, key=lambda c: (
        order.index(c.analysis), c.label, SHIFTS.index(c.shift))):
      if (c.label, c.shift) not in seen:  # e.g. (a) "prune only" repeats.
        seen.add((c.label, c.shift))
        listed.append(c)
    if listed:
      out += ["", "| analysis | comparison | shift type | effect in R "
              "[95 % CI] | effect in drop, points [95 % CI] |",
              "|---|---|---|---|---|"]
      out += [f"| {c.analysis} | {c.label} | {c.shift} | {_fmt(c.effect)} "
              f"| {_fmt(c.effect_drop, 100, 1)} |" for c in listed]
    out.append("")
  if checks is not None:
    out += ["### Sanity checks of the adversarial evaluation", ""]
    out += [f"- {c}" for c in checks] or [
        "- Nothing flagged (PGD <= FGSM, accuracy non-increasing in eps, no "
        "transfer attack beating the white-box ones, within sampling "
        "noise)."]
    out.append("")
  return "\n".join(out)
