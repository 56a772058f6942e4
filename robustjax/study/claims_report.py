"""The report's claims section: verdicts and sanity checks as Markdown."""

from typing import Optional, Sequence

import numpy as np

from robustjax.study import claims_data
from robustjax.study import comparisons
from robustjax.study import stats

def _fmt(e: Optional[stats.Estimate], scale: float = 1.0,
         digits: int = 3) -> str:
  if e is None or not np.isfinite(e.value):
    return "n/a"
  if not (np.isfinite(e.lo) and np.isfinite(e.hi)):
    return f"{scale * e.value:+.{digits}f} [n/a]"
  return (f"{scale * e.value:+.{digits}f} [{scale * e.lo:+.{digits}f}, "
          f"{scale * e.hi:+.{digits}f}]")


def render_markdown(verdicts: Sequence[comparisons.Verdict],
                    checks: Optional[Sequence[str]] = None) -> str:
  """The report's claims section (Markdown).

  Args:
    verdicts: from `claims.test_claims`.
    checks: optional lines from `claims.sanity_checks`, listed at the end.

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
        order.index(c.analysis), c.label, claims_data.SHIFTS.index(c.shift))):
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
