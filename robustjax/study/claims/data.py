"""The claims' input and the per-example tables their inference reads.

`StudyData(rows, examples)` holds the result rows and, per (model_id, seed,
shift, name) cell, the per-example correctness [levels, n]. `shift_table`
turns it into one shift type's table: every model's clean and shifted
contributions per example and seed, on the cells, levels, examples and seeds
that all those models share (rules: `robustjax.study.claims`).
`summarize_models` gives the descriptive per-model summary of the report's
model table, from the rows alone.
"""

import collections
import dataclasses
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from robustjax.robustness import metrics

# The shift types the claims are tested on (clean is the reference).
SHIFT_TYPES = ("domain", "corruption", "adversarial")
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


@dataclasses.dataclass(frozen=True)
class Info:
  """What the comparisons need to know about one model (from its rows)."""
  model_id: str
  arch: str
  method: str
  setting: dict
  size_bits: float
  original_id: Optional[str]


def model_infos(rows) -> Dict[str, Info]:
  """model_id -> `Info`, from each model's first row."""
  out = {}
  for r in rows:
    if r["model_id"] not in out:
      size = r.get("size_bits")
      out[r["model_id"]] = Info(
          r["model_id"], r["arch"], r["method"], dict(r.get("setting") or {}),
          float(size) if size is not None else float("nan"),
          r.get("original_id"))
  return out


def example_cells(data: StudyData):
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


def threat_model(attack: str) -> str:
  """'l2' if "l2" is in the attack's name, else 'linf'."""
  return "l2" if "l2" in attack else "linf"


def _worst_case(attacks, names, common, n):
  """(norm, eps) -> bool [n]: robust only if every attack failed."""
  out = {}
  for name in names:
    levels, arr = attacks[name]
    for i, eps in enumerate(levels):
      if eps and eps in common[name]:
        k = (threat_model(name), eps)
        out[k] = out[k] & arr[i, :n] if k in out else arr[i, :n]
  return out


@dataclasses.dataclass
class Table:
  """Per-example contributions of every model for one shift type."""
  shift: str
  models: List[str]
  seeds: List[int]
  x: np.ndarray  # [examples, seeds, models, 2 (clean, shifted)]
  set_sizes: List[int]
  notes: List[str]


def shift_table(shift: str, cells) -> Optional[Table]:
  """Builds the table of one shift type, or None without data."""
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
    return Table(shift, models, seeds, x, sizes, notes)
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
  return Table(shift, models, seeds, x, [n], notes)


def chance_corrected(clean, shifted, chance: float):
  """R = (shifted - chance) / (clean - chance); NaN where clean <= chance."""
  clean, shifted = np.asarray(clean, np.float64), np.asarray(shifted)
  den = clean - chance
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(den > 0, (shifted - chance) / den, np.nan)


def robustness(data: StudyData, chance: float = 0.0
               ) -> Dict[str, Dict[str, Tuple[float, ...]]]:
  """The point estimates the claims are computed from.

  Args:
    data: the study's rows and per-example correctness.
    chance: chance accuracy (1 / number of classes) for the chance-corrected
      R; 0 gives R = shifted / clean.

  Returns:
    model_id -> shift type -> (clean accuracy, shifted accuracy, R), on the
    examples, cells and seeds that every model with that shift type shares
    (adversarial: worst case over attacks; see `robustjax.study.claims`):
    accuracies averaged over seeds, R computed per seed, then averaged.
  """
  cells, _ = example_cells(data)
  out = collections.defaultdict(dict)
  for shift in SHIFT_TYPES:
    t = shift_table(shift, cells)
    if t is None:
      continue
    v = t.x.sum(axis=0)  # [seeds, models, 2]
    r = chance_corrected(v[..., 0], v[..., 1], chance).mean(axis=0)
    for i, m in enumerate(t.models):
      out[m][shift] = (float(v[:, i, 0].mean()), float(v[:, i, 1].mean()),
                       float(r[i]))
  return dict(out)


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

  A descriptive summary (each attack counted on its own, means over seeds,
  R = shifted / clean as `metrics.summarize` gives it); the claims use the
  per-example worst case over attacks and a chance-corrected R instead.
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
        mean={k: avg[k] for k in SHIFT_TYPES},
        robustness={k: avg[f"{k}_relative"] for k in SHIFT_TYPES})
  return out
