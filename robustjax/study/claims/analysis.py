"""`test_claims`: the verdicts of a study, and sanity checks of its attacks.

The rules (what is compared, how it is tested, what a verdict means) are in
the package docstring, `robustjax.study.claims`.
"""

import collections
import dataclasses
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from robustjax.data import registry
from robustjax.study.claims import comparisons as comparisons_lib
from robustjax.study.claims import data as data_lib
from robustjax.study.claims import inference

MIN_STUDENTS = 2  # (c) needs this many students for a general verdict.
POWER = 0.8  # For the minimum detectable effects.


@dataclasses.dataclass(frozen=True)
class Options:
  """How the claims are tested (`config.study.claims`, configs/common.py).

  Attributes:
    alpha: family-wise error rate of each family of verdicts (the primary
      shift types' cells; the secondary ones'), Bonferroni-corrected.
    primary: the shift types whose cells decide the overall verdicts.
    max_clean_drop: a non-original model whose seed-mean clean accuracy is
      more than this below its original's is left out of the claims.
    equivalence_margin: the TOST margin (in R) of "int8 PTQ is reliable".
    num_classes: sets chance accuracy 1 / num_classes for the
      chance-corrected R; None uses R = shifted / clean.
  """
  alpha: float = 0.05
  primary: Tuple[str, ...] = ("domain", "adversarial")
  max_clean_drop: float = 0.05
  equivalence_margin: float = 0.02
  num_classes: Optional[int] = None

  @property
  def chance(self) -> float:
    return 1.0 / self.num_classes if self.num_classes else 0.0

  @classmethod
  def from_config(cls, config: Optional[Mapping]) -> "Options":
    """Options from a study's resolved config (its `config.json`)."""
    config = config or {}
    block = dict((config.get("study") or {}).get("claims") or {})
    if "primary" in block:
      block["primary"] = tuple(block["primary"])
    unknown = set(block) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ValueError(f"Unknown study.claims fields {sorted(unknown)}; "
                       f"known: {[f.name for f in dataclasses.fields(cls)]}.")
    name = (config.get("dataset") or {}).get("name")
    if name and "num_classes" not in block:
      block["num_classes"] = registry.get_spec(name).num_classes
    return cls(**block)


@dataclasses.dataclass(frozen=True)
class Exclusion:
  """A model left out of the claims, and why."""
  model_id: str
  clean: float
  original_id: str
  original_clean: float


@dataclasses.dataclass
class Claims:
  """Everything `test_claims` found.

  Attributes:
    verdicts: one `Verdict` per claim, (a) to (d).
    control: the negative control's cells (one per shift type with data).
    control_comparisons: its comparisons.
    excluded: models left out (clean accuracy too far below the original's).
    options: how it was tested.
    num_seeds: shift type -> the number of seeds used.
    notes: what was left out of the tables and why.
  """
  verdicts: List[comparisons_lib.Verdict]
  control: List[comparisons_lib.Cell]
  control_comparisons: List[comparisons_lib.Comparison]
  excluded: List[Exclusion]
  options: Options
  num_seeds: Dict[str, int]
  notes: List[str]


class _Shift:
  """One shift type's per-seed R and its per-example linearisation."""

  def __init__(self, table: data_lib.Table, chance: float):
    self.table = table
    self.index = {m: i for i, m in enumerate(table.models)}
    x = table.x  # [rows, seeds, models, 2]
    self.x = x
    clean, shifted = x[..., 0].sum(axis=0), x[..., 1].sum(axis=0)  # [S, M]
    self.r = data_lib.chance_corrected(clean, shifted, chance)
    den = clean - chance
    with np.errstate(divide="ignore", invalid="ignore"):
      # dR / d shifted and dR / d clean, per seed and model.
      self.g_shifted = np.where(den > 0, 1.0 / den, np.nan)
      self.g_clean = np.where(den > 0, -(shifted - chance) / den ** 2, np.nan)
    self.neg_drop = shifted - clean
    bounds = np.cumsum([0] + list(table.set_sizes))
    self.sets = list(zip(bounds[:-1], bounds[1:]))
    self._effects = {}  # The same comparison enters several analyses.

  def weights(self, coefs) -> Optional[np.ndarray]:
    if any(m not in self.index for m, _ in coefs):
      return None
    w = np.zeros(len(self.index))
    for m, c in coefs:
      w[self.index[m]] += c
    return w

  def effects(self, w: np.ndarray) -> Tuple[inference.Effect,
                                            inference.Effect]:
    """The effect of weights `w` [M] in R and in -drop."""
    key = w.tobytes()
    if key not in self._effects:
      self._effects[key] = self._compute(w)
    return self._effects[key]

  def _compute(self, w: np.ndarray):
    used = w != 0
    d = self.r[:, used] @ w[used]
    g1 = np.where(used, self.g_shifted, 0.0) * w  # [S, M]
    g0 = np.where(used, self.g_clean, 0.0) * w
    u_r, u_d = [], []
    for lo, hi in self.sets:
      n = hi - lo
      xs = self.x[lo:hi]
      u_r.append(n * (np.einsum("ism,sm->si", xs[..., 1], g1) +
                      np.einsum("ism,sm->si", xs[..., 0], g0)))
      u_d.append(n * np.einsum("ism,m->si", xs[..., 1] - xs[..., 0], w))
    return (inference.effect(d, u_r),
            inference.effect(self.neg_drop @ w, u_d))


def _pooled(shift: _Shift, specs) -> Optional[np.ndarray]:
  ws = [shift.weights(s.coefs) for s in specs]
  ws = [w for w in ws if w is not None]
  return np.mean(ws, axis=0) if ws else None


def _decide(est: Optional[inference.Estimate]) -> str:
  if est is None or not np.isfinite(est.value):
    return "not testable" if est is None else "inconclusive"
  return {1: "supported", -1: "contradicted", 0: "inconclusive"}[est.sign]


def _overall(cells: Sequence[comparisons_lib.Cell]) -> str:
  verdicts = [c.verdict for c in cells if c.in_verdict]
  sup, con = "supported" in verdicts, "contradicted" in verdicts
  if sup and con:
    return "mixed"
  if sup or con:
    return "supported" if sup else "contradicted"
  if "inconclusive" in verdicts:
    return "inconclusive"
  return "not testable"


def _min_interval(effects: Sequence[inference.Effect],
                  alpha: float) -> inference.Estimate:
  """Interval of the minimum of several effects.

  Each component's interval is built at alpha / k: the lower end min(lo_j)
  fails only if the smallest effect's does, the upper end min(hi_j) only if
  some hi_j does, so the interval covers min(effect_j) with probability at
  least 1 - alpha.
  """
  ests = [e.interval(alpha / len(effects)) for e in effects]
  return inference.Estimate(min(e.value for e in ests),
                            min(e.lo for e in ests), min(e.hi for e in ests))


def _cell(analysis, shift_name, shift, specs, components, primary,
          in_verdict, alpha) -> comparisons_lib.Cell:
  """Pools `specs` per component and tests them together at `alpha`."""
  cell = comparisons_lib.Cell(analysis, shift_name, primary, in_verdict,
                              "not testable")
  if shift is None:
    return cell
  r_effects, d_effects, counts = {}, {}, 0
  for comp in components:
    mine = [s for s in specs if s.component == comp]
    w = _pooled(shift, mine)
    if w is None:
      return cell  # An intersection-union test needs every component.
    counts += sum(shift.weights(s.coefs) is not None for s in mine)
    r_effects[comp], d_effects[comp] = shift.effects(w)
  k = len(components)
  cell.count, cell.alpha, cell.components = counts, alpha, r_effects
  cell.effect = _min_interval(list(r_effects.values()), alpha)
  cell.effect_drop = _min_interval(list(d_effects.values()), alpha)
  cell.verdict = _decide(cell.effect)
  cell.mde = max(e.mde(alpha / k, POWER) for e in r_effects.values())
  cell.mde_10 = max(e.mde(alpha / k, POWER, num_seeds=10)
                    for e in r_effects.values())
  return cell


def _equivalence(shift_name, shift, specs, margin, alpha
                 ) -> comparisons_lib.Cell:
  """TOST: equivalent if the (1 - 2 alpha) interval lies within +-margin."""
  cell = comparisons_lib.Cell(comparisons_lib.EQUIVALENCE_D, shift_name,
                              False, False, "not testable")
  w = _pooled(shift, specs) if shift is not None else None
  if w is None:
    return cell
  r, d = shift.effects(w)
  cell.count, cell.alpha, cell.components = len(specs), 2 * alpha, {"": r}
  cell.effect, cell.effect_drop = r.interval(2 * alpha), d.interval(2 * alpha)
  inside = -margin < cell.effect.lo and cell.effect.hi < margin
  cell.verdict = ("equivalent" if inside else "not shown equivalent") + (
      f" (margin +-{margin:g})")
  return cell


def _exclusions(rows, options) -> List[Exclusion]:
  """Models whose seed-mean clean accuracy fell too far below the original's.
  """
  clean = collections.defaultdict(list)
  for r in rows:
    if r["shift"] == "clean" and r["name"] == "source":
      clean[r["model_id"]].append(r["accuracy"])
  means = {m: float(np.mean(v)) for m, v in clean.items()}
  infos = data_lib.model_infos(rows)
  out = []
  for m, info in sorted(infos.items()):
    o = info.original_id
    if info.method == "original" or o not in means or m not in means:
      continue
    if means[o] - means[m] > options.max_clean_drop:
      out.append(Exclusion(m, means[m], o, means[o]))
  return out


def test_claims(data: data_lib.StudyData,
                options: Options = Options()) -> Claims:
  """All four verdicts of a study, and its negative control.

  Args:
    data: the study's rows and per-example correctness (`StudyData`).
    options: how to test (`Options`; `Options.from_config(config)` reads a
      study's config).

  Returns:
    A `Claims` record (rules: the `robustjax.study.claims` docstring).
  """
  if not isinstance(data, data_lib.StudyData):
    raise TypeError("test_claims takes a claims.data.StudyData(rows, "
                    f"examples), got {type(data).__name__}; wrap rows without "
                    "per-example data as StudyData(rows, {}).")
  unknown = set(options.primary) - set(data_lib.SHIFT_TYPES)
  if unknown:
    raise ValueError(f"study.claims.primary has {sorted(unknown)}; choose "
                     f"from {data_lib.SHIFT_TYPES}.")
  excluded = _exclusions(data.rows, options)
  gone = {e.model_id for e in excluded}
  infos = {m: i for m, i in data_lib.model_infos(data.rows).items()
           if m not in gone}
  cells, missing = data_lib.example_cells(data)
  cells = {k: v for k, v in cells.items() if k[0] not in gone}
  notes = []
  if missing:
    notes.append("No per-example correctness for " +
                 ", ".join(sorted(missing)) + ": their comparisons are left "
                 "out (not testable without it).")
  shifts, num_seeds = {}, {}
  for name in data_lib.SHIFT_TYPES:
    table = data_lib.shift_table(name, cells)
    if table is not None:
      notes += table.notes
      shifts[name] = _Shift(table, options.chance)
      num_seeds[name] = len(table.seeds)
  specs = {c.key: c.specs(infos) for c in comparisons_lib.CLAIMS}

  # The families: the deciding cells on primary shift types, and on the
  # secondary ones; each Bonferroni-corrected over its testable cells.
  def testable(claim, shift_name):
    shift = shifts.get(shift_name)
    mine = [s for s in specs[claim.key] if s.analysis == claim.main]
    return shift is not None and all(
        _pooled(shift, [s for s in mine if s.component == comp]) is not None
        for comp in claim.components)
  family = {p: sum(testable(c, s) for c in comparisons_lib.CLAIMS
                   for s in data_lib.SHIFT_TYPES
                   if (s in options.primary) == p) for p in (True, False)}
  alpha_of = {p: inference.bonferroni(options.alpha, family[p])
              for p in (True, False)}

  verdicts = []
  for claim in comparisons_lib.CLAIMS:
    mine = specs[claim.key]
    claim_notes = []
    out_cells, out_comparisons = [], []
    analyses = list(dict.fromkeys([claim.main] + [s.analysis for s in mine]))
    for analysis in analyses:
      a_specs = [s for s in mine if s.analysis == analysis]
      for name in data_lib.SHIFT_TYPES:
        primary = name in options.primary
        shift = shifts.get(name)
        if analysis == comparisons_lib.EQUIVALENCE_D:
          out_cells.append(_equivalence(name, shift, a_specs,
                                        options.equivalence_margin,
                                        options.alpha))
        elif analysis == claim.main:
          out_cells.append(_cell(analysis, name, shift, a_specs,
                                 claim.components, primary, primary,
                                 alpha_of[primary]))
        else:  # Secondary analyses: pooled, uncorrected, labelled.
          comps = tuple(dict.fromkeys(s.component for s in a_specs))
          out_cells.append(_cell(analysis, name, shift, a_specs, comps,
                                 primary, False, options.alpha))
        if shift is None:
          continue
        for s in a_specs:
          w = shift.weights(s.coefs)
          if w is not None and analysis != comparisons_lib.EQUIVALENCE_D:
            r, d = shift.effects(w)
            out_comparisons.append(comparisons_lib.Comparison(
                analysis, s.label, name, r.interval(options.alpha),
                d.interval(options.alpha)))
    overall = _overall(out_cells)
    if claim.key == "c":
      students = {s.unit for s in mine if s.analysis == claim.main}
      if len(students) < MIN_STUDENTS and overall != "not testable":
        claim_notes.append(
            f"Only {len(students)} student(s) ({sorted(students)}): the "
            f"claim is about students in general, so the overall verdict "
            f"needs >= {MIN_STUDENTS}; it is capped at inconclusive (was "
            f"{overall}).")
        overall = "inconclusive"
    if not mine:
      claim_notes.append("The grid has no comparison for this claim.")
    verdicts.append(comparisons_lib.Verdict(
        claim.key, claim.statement, overall, claim.effect,
        claim.effect_drop, out_cells, out_comparisons, claim_notes))

  control_specs = comparisons_lib.specs_control(infos)
  control, control_comparisons = [], []
  if control_specs:
    for name in data_lib.SHIFT_TYPES:
      shift = shifts.get(name)
      # Tested exactly as a claim's deciding cell on this shift type is.
      control.append(_cell("negative control", name, shift, control_specs,
                           ("",), name in options.primary, False,
                           alpha_of[name in options.primary]))
      for s in control_specs:
        w = shift.weights(s.coefs) if shift is not None else None
        if w is not None:
          r, d = shift.effects(w)
          control_comparisons.append(comparisons_lib.Comparison(
              "negative control", s.label, name, r.interval(options.alpha),
              d.interval(options.alpha)))
  return Claims(verdicts, control, control_comparisons, excluded, options,
                num_seeds, notes)


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
          data_lib.threat_model(name) == "linf":
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
        norm = data_lib.threat_model(name)
        white = sorted(a for a in attacks if not a.startswith("transfer")
                       and data_lib.threat_model(a) == norm)
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


def sanity_checks(data: data_lib.StudyData) -> List[str]:
  """Flags adversarial results that look wrong, beyond sampling noise.

  Per model and seed: PGD-Linf accuracy above FGSM's at the same eps;
  accuracy rising with eps (per attack); a transfer attack (name starting
  with "transfer") with lower accuracy than every white-box attack of its
  threat model together (a sign of gradient masking). A check is flagged
  only when the 95 % interval over examples (one trained model: the
  examples are the only source of variation) of the paired difference lies
  above zero.

  Args:
    data: the study's rows and per-example correctness.

  Returns:
    One line per flag (empty when nothing is flagged).
  """
  cells, _ = data_lib.example_cells(data)
  by_n = collections.defaultdict(list)
  for msg, diff in _adversarial_checks(cells):
    by_n[diff.shape[0]].append((msg, diff))
  flags = []
  for n, checks in sorted(by_n.items()):
    diffs = np.stack([d for _, d in checks], axis=1)
    ests = inference.paired_mean_difference(diffs)
    for (msg, _), e in zip(checks, ests):
      if e.sign > 0:
        flags.append(f"{msg}: difference {100 * e.value:+.1f} points, 95 % "
                     f"CI [{100 * e.lo:+.1f}, {100 * e.hi:+.1f}] over {n} "
                     "examples.")
  return flags
