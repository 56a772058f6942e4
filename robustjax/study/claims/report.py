"""The report's claims section: verdicts, forest plot and sanity checks."""

from typing import List, Optional, Sequence

from matplotlib import figure as mpl_figure
import numpy as np

from robustjax.study.claims import analysis
from robustjax.study.claims import comparisons
from robustjax.study.claims import data as data_lib
from robustjax.study.claims import inference

FOREST_PNG = "claims_forest.png"
_COLORS = {"supported": "tab:green", "contradicted": "tab:red",
           "inconclusive": "tab:gray", "not testable": "white"}


def fmt(e: Optional[inference.Estimate], scale: float = 1.0,
        digits: int = 3) -> str:
  """`+v [lo, hi]`, or n/a."""
  if e is None or not np.isfinite(e.value):
    return "n/a"
  if not (np.isfinite(e.lo) and np.isfinite(e.hi)):
    return f"{scale * e.value:+.{digits}f} [n/a]"
  return (f"{scale * e.value:+.{digits}f} [{scale * e.lo:+.{digits}f}, "
          f"{scale * e.hi:+.{digits}f}]")


def _level(alpha: float) -> str:
  return "n/a" if not np.isfinite(alpha) else f"{100 * (1 - alpha):.2f} %"


def protocol(result: analysis.Claims) -> str:
  """The paragraph that says how the verdicts were reached."""
  o = result.options
  seeds = sorted(set(result.num_seeds.values()))
  primary = [s for s in data_lib.SHIFT_TYPES if s in o.primary]
  secondary = [s for s in data_lib.SHIFT_TYPES if s not in o.primary]
  chance = (f"R = (shifted - {o.chance:.3g}) / (clean - {o.chance:.3g}), "
            f"chance-corrected for {o.num_classes} classes"
            if o.num_classes else "R = shifted / clean")
  return (
      f"Primary endpoints, declared before the data: {', '.join(primary)} "
      f"(the paper's two shift types); their deciding cells are one family, "
      f"Bonferroni-corrected to a family-wise error rate of {o.alpha:g}, and "
      f"only they decide the overall verdicts. Secondary: "
      f"{', '.join(secondary) or 'none'} (corrected the same way, as its "
      f"own family) and the labelled sub-analyses (uncorrected "
      f"{100 * (1 - o.alpha):g} % intervals). Each effect is the mean over "
      f"{' / '.join(map(str, seeds)) or '?'} seed(s) of per-seed paired "
      f"effects (same examples, same seeds), positive = the direction the "
      f"paper claims, with an interval that adds the sampling of test "
      f"examples to the spread between seeds (seed x example crossed random "
      f"effects; t quantile on S - 1 df for the seeds' part; "
      f"`robustjax/study/claims/`). "
      f"{chance}. A compressed model more than {100 * o.max_clean_drop:g} "
      f"points below its original's clean accuracy is left out. A cell is "
      f"supported / contradicted only when its corrected interval excludes "
      f"zero. MDE = the smallest true effect a cell detects with 80 % power "
      f"at its level.")


def _cell_rows(cells: Sequence[comparisons.Cell], mde: bool) -> List[str]:
  out = []
  for c in cells:
    if not (c.in_verdict or c.count or c.analysis.startswith("negative")):
      continue
    row = (f"| {c.analysis} | {c.shift}{' (primary)' if c.primary else ''} "
           f"| {fmt(c.effect)} | {fmt(c.effect_drop, 100, 1)} | "
           f"{_level(c.alpha)} | {c.verdict} | {c.count}")
    if mde:
      row += (f" | {c.mde:.3f} ({c.mde_10:.3f})" if np.isfinite(c.mde)
              else " | n/a")
    out.append(row + " |")
  return out


def _table_head(mde: bool) -> List[str]:
  head = ("| analysis | shift type | effect in R [interval] | effect in "
          "drop, points [interval] | level | verdict | comparisons |")
  rule = "|---|---|---|---|---|---|---|"
  if mde:
    head += " MDE in R (10 seeds) |"
    rule += "---|"
  return [head, rule]


def render_markdown(result: analysis.Claims,
                    checks: Optional[Sequence[str]] = None,
                    forest: Optional[str] = None) -> str:
  """The report's claims section (Markdown).

  Args:
    result: from `analysis.test_claims`.
    checks: optional lines from `analysis.sanity_checks`, listed at the end.
    forest: the forest plot's path relative to the report, if drawn.

  Returns:
    The section: the protocol, excluded models, the negative control, then
    per claim its cells (deciding cells first), notes and comparisons.
  """
  out = ["## Claims of Shen et al. (2024), tested on these results", "",
         protocol(result), ""]
  if forest:
    out += [f"![claims forest plot]({forest})", ""]
  out += [f"- {n}" for n in result.notes] + [""] * bool(result.notes)
  if result.excluded:
    out += ["Left out of the claims (clean accuracy more than "
            f"{100 * result.options.max_clean_drop:g} points below the "
            "original's, mean over seeds):", ""]
    out += [f"- {e.model_id}: {100 * e.clean:.1f} % vs {e.original_id} "
            f"{100 * e.original_clean:.1f} %" for e in result.excluded]
    out.append("")
  out += ["### Negative control", ""]
  if result.control:
    out += ["An independently retrained copy of an original, compared with "
            "it as if it were compressed (R(original) - R(replicate)); the "
            "true effect is zero, so every line should be inconclusive. It "
            "is tested at the level of the claims' cells.", ""]
    out += _table_head(False) + _cell_rows(result.control, False) + [""]
  else:
    out += ["The grid has no replicate model (`study.negative_control`).",
            ""]
  for v in result.verdicts:
    out += [f"### {v.claim}", "",
            f"**{v.verdict.upper()}**. Effect in R: {v.effect}. Effect in "
            f"drop: {v.effect_drop}.", ""]
    deciding = list(v.deciding.values())
    rest = [c for c in v.cells if c not in deciding]
    out += _table_head(True) + _cell_rows(deciding, True)
    out += _cell_rows(rest, True) + [""]
    for c in deciding:
      if len(c.components) > 1 and c.effect is not None:
        parts = "; ".join(
            f"{name} {fmt(e.interval(c.alpha / len(c.components)))}"
            for name, e in c.components.items())
        out.append(f"- {c.shift}: components (each at "
                   f"{_level(c.alpha / len(c.components))}): {parts}")
    out += [f"- {n}" for n in v.notes]
    order = list(dict.fromkeys(c.analysis for c in v.cells))
    seen, listed = set(), []
    for c in sorted(v.comparisons, key=lambda c: (
        order.index(c.analysis), c.label,
        data_lib.SHIFT_TYPES.index(c.shift))):
      if (c.label, c.shift) not in seen:  # e.g. (a) "prune only" repeats.
        seen.add((c.label, c.shift))
        listed.append(c)
    if listed:
      out += ["", "| analysis | comparison | shift type | effect in R "
              f"[{_level(result.options.alpha)}] | effect in drop, points |",
              "|---|---|---|---|---|"]
      out += [f"| {c.analysis} | {c.label} | {c.shift} | {fmt(c.effect)} "
              f"| {fmt(c.effect_drop, 100, 1)} |" for c in listed]
    out.append("")
  if checks is not None:
    out += ["### Sanity checks of the adversarial evaluation", ""]
    out += [f"- {c}" for c in checks] or [
        "- Nothing flagged (PGD <= FGSM, accuracy non-increasing in eps, no "
        "transfer attack beating the white-box ones, within sampling "
        "noise)."]
    out.append("")
  return "\n".join(out)


def forest_figure(result: analysis.Claims) -> mpl_figure.Figure:
  """Each claim x shift type's effect in R with its corrected interval.

  Primary cells first, then the secondary shift types, then the negative
  control; colour = verdict.
  """
  rows = []  # (label, cell, group)
  for group, primary in (("primary", True), ("secondary", False)):
    for v in result.verdicts:
      for c in v.deciding.values():
        if c.primary == primary:
          rows.append((f"({v.key}) {c.shift}", c, group))
  for c in result.control:
    rows.append((f"control {c.shift}", c, "negative control"))
  fig = mpl_figure.Figure(figsize=(7.5, 0.38 * len(rows) + 1.6))
  ax = fig.add_subplot()
  for y, (label, c, _) in enumerate(rows):
    e = c.effect
    if e is None or not np.all(np.isfinite(e)):
      ax.text(0, y, "not testable", va="center", ha="center", fontsize=8,
              color="gray")
      continue
    color = _COLORS.get(c.verdict, "tab:gray")
    ax.plot([e.lo, e.hi], [y, y], color=color, lw=2.5)
    ax.plot([e.value], [y], "o", color=color, mec="black", ms=5)
  ax.axvline(0, color="black", lw=0.8)
  ax.set_yticks(range(len(rows)))
  ax.set_yticklabels([f"{label} [{group}]" for label, _, group in rows],
                     fontsize=8)
  ax.invert_yaxis()
  ax.set_xlabel("effect in R (positive = as the paper claims), "
                "family-corrected interval")
  ax.set_title("Claims of Shen et al. (2024)\ngreen: supported, red: "
               "contradicted, grey: inconclusive", fontsize=9)
  fig.tight_layout()
  return fig
