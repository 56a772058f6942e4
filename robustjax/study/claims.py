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
from typing import Dict, List, Optional, Sequence

import numpy as np

from robustjax.robustness import metrics
from robustjax.study import claims_data
from robustjax.study import claims_report
from robustjax.study import comparisons as comparisons_lib
from robustjax.study import stats

MIN_STUDENTS = 2  # (c) needs this many students for a general verdict.

# The claims' API, defined next door: the input and its per-example tables
# (claims_data), the comparisons and result records (comparisons), the
# Markdown section (claims_report).
SHIFTS = claims_data.SHIFTS
ExampleKey = claims_data.ExampleKey
StudyData = claims_data.StudyData
make_study_data = claims_data.make_study_data
robustness = claims_data.robustness
SIZE_TOLERANCE = comparisons_lib.SIZE_TOLERANCE
COMPRESSED = comparisons_lib.COMPRESSED
Comparison = comparisons_lib.Comparison
ShiftResult = comparisons_lib.ShiftResult
Verdict = comparisons_lib.Verdict
render_markdown = claims_report.render_markdown


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


# Verdicts.


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


def _quantities(table: claims_data.Table, seed: int, num_replicates: int):
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
  infos = claims_data.model_infos(data.rows)
  cells, missing = claims_data.example_cells(data)
  common_notes = []
  if missing:
    common_notes.append(
        "No per-example correctness for " + ", ".join(sorted(missing)) +
        ": their comparisons are left out (not testable without it).")
  tables = {s: claims_data.shift_table(s, cells) for s in SHIFTS}
  quantities = {s: _quantities(t, seed, num_replicates)
                for s, t in tables.items() if t is not None}
  for t in tables.values():
    common_notes += t.notes if t is not None else []
  verdicts = []
  for claim in comparisons_lib.CLAIMS:
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
          claims_data.threat_model(name) == "linf":
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
        norm = claims_data.threat_model(name)
        white = sorted(a for a in attacks if not a.startswith("transfer")
                       and claims_data.threat_model(a) == norm)
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
  cells, _ = claims_data.example_cells(data)
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

