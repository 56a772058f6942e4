"""Robustness metrics over result rows.

Definitions (robustjax's protocol, see README "Protocol"):

* accuracy / error = 1 - accuracy, per shift and level.
* drop = clean accuracy - shifted accuracy (same model).
* relative robustness = shifted accuracy / clean accuracy (same model): how
  much of its own clean accuracy a model keeps under a shift.
* retention = shifted accuracy of a compressed model / shifted accuracy of
  its uncompressed original (same shift and level).
* corruption error CE_c = sum_s err(model, c, s) / sum_s err(baseline, c, s)
  (Hendrycks & Dietterich 2019); mCE = mean over corruptions.
"""

from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np


def _key(row):
  return (row["shift"], row.get("name"), row.get("level"))


def accuracy_table(rows: Iterable[dict]) -> Dict[tuple, float]:
  """(shift, name, level) -> accuracy for one model's rows."""
  return {_key(r): float(r["accuracy"]) for r in rows}


def clean_accuracy(rows: Iterable[dict]) -> Optional[float]:
  for r in rows:
    if r["shift"] == "clean":
      return float(r["accuracy"])
  return None


def drop(clean: float, shifted: float) -> float:
  return clean - shifted


def relative_robustness(clean: float, shifted: float) -> float:
  return shifted / clean if clean > 0 else float("nan")


def retention(compressed: float, original: float) -> float:
  return compressed / original if original > 0 else float("nan")


def corruption_errors(rows: Sequence[dict], baseline_rows: Sequence[dict]
                      ) -> Dict[str, float]:
  """CE per corruption name, normalised by the baseline model's errors.

  Only (corruption, severity) levels present for both models are used.
  """
  mine = {(r["name"], r["level"]): 1 - r["accuracy"] for r in rows
          if r["shift"] == "corruption"}
  base = {(r["name"], r["level"]): 1 - r["accuracy"] for r in baseline_rows
          if r["shift"] == "corruption"}
  out = {}
  for name in sorted({k[0] for k in mine}):
    levels = [k for k in mine if k[0] == name and k in base]
    denominator = sum(base[k] for k in levels)
    if levels and denominator > 0:
      out[name] = sum(mine[k] for k in levels) / denominator
  return out


def mean_corruption_error(rows: Sequence[dict],
                          baseline_rows: Sequence[dict]) -> float:
  ces = corruption_errors(rows, baseline_rows)
  return float(np.mean(list(ces.values()))) if ces else float("nan")


def mean_accuracy(rows: Iterable[dict], shift: str,
                  exclude_zero_level: bool = True) -> float:
  """Mean accuracy over all names and levels of one shift type.

  For adversarial rows, level 0 (eps = 0, i.e. clean) is excluded by default.
  """
  values = [r["accuracy"] for r in rows if r["shift"] == shift and not (
      exclude_zero_level and shift == "adversarial" and not r.get("level"))]
  return float(np.mean(values)) if values else float("nan")


def summarize(rows: List[dict]) -> Dict[str, float]:
  """Per-model summary: clean, mean per shift type, relative robustness."""
  clean = clean_accuracy(rows)
  out = {"clean": clean if clean is not None else float("nan")}
  for shift in ("domain", "corruption", "adversarial"):
    m = mean_accuracy(rows, shift)
    out[shift] = m
    out[f"{shift}_relative"] = (relative_robustness(clean, m)
                                if clean is not None else float("nan"))
  return out
