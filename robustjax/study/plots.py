"""The study's PNG plots: accuracy against model size, severity and eps.

Plots use matplotlib's object API (`matplotlib.figure.Figure`), never pyplot
or `matplotlib.use`, so they neither need a display nor change a notebook's
backend. Colour = architecture, marker = method; where rows carry a `seed`
and a model was run with several seeds, points are the mean over seeds and
error bars +- one standard deviation (`seed_groups`). Plots are rendered in
memory and written whole through robustjax.io, so the folder may be in a
bucket (`gs://...`).
"""

import dataclasses
import io as stdio
import json
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib
from matplotlib import figure as mpl_figure
from matplotlib import lines as mpl_lines
import numpy as np

from robustjax import io
from robustjax.robustness import metrics
from robustjax.study.claims import data as claims_data

METHOD_MARKERS = {"original": "*", "prune": "o", "distill": "s",
                  "distill_control": "D", "quantize": "^", "replicate": "P"}
# One sequential colour map per architecture (in order of appearance); the
# models of one architecture get shades of it.
ARCH_COLORMAPS = ("Blues", "Oranges", "Greens", "Purples", "Reds", "Greys")
_SEED_RE = re.compile(r"[-_/]?seed[-_=]?\d+")


@dataclasses.dataclass
class SeedGroup:
  """One model of the grid over its seeds (a single member without seeds)."""
  label: str
  arch: str
  method: str
  size_kb: float
  rows: Dict[object, List[dict]]  # seed (or model_id) -> that run's rows.

  @property
  def num_seeds(self) -> int:
    return len(self.rows)

  def stat(self, fn) -> Tuple[float, float]:
    """Mean and std over seeds of `fn(rows of one seed)` (NaNs ignored)."""
    values = np.array([fn(r) for r in self.rows.values()], dtype=float)
    values = values[np.isfinite(values)]
    if not values.size:
      return float("nan"), float("nan")
    std = float(np.std(values, ddof=1)) if values.size > 1 else float("nan")
    return float(np.mean(values)), std


def seed_groups(rows: Sequence[dict]) -> List[SeedGroup]:
  """Groups rows by model over seeds, in a stable order (arch, method, id).

  Models that differ only in `seed` (rows' `seed` field; a `seed` entry of
  `setting` is ignored) form one group; rows without a seed make one group
  per model_id.
  """
  groups = {}
  for r in rows:
    if "seed" in r:
      setting = {k: v for k, v in (r.get("setting") or {}).items()
                 if k != "seed"}
      key = (r["arch"], r["method"], json.dumps(setting, sort_keys=True,
                                                default=str))
      label, member = _SEED_RE.sub("", r["model_id"]), r["seed"]
    else:
      key = label = member = r["model_id"]
    if key not in groups:
      groups[key] = SeedGroup(label, r["arch"], r["method"],
                              float(r.get("size_bits") or np.nan) / 8e3, {})
    groups[key].rows.setdefault(member, []).append(r)
  return sorted(groups.values(), key=lambda g: (
      g.arch, g.method != "original", g.method, g.label))


def _or_nan(x) -> float:
  return float("nan") if x is None else float(x)


def _arch_colors(groups: Sequence[SeedGroup]):
  """(arch -> main colour, label -> shade of its architecture's colour)."""
  archs = list(dict.fromkeys(g.arch for g in groups))
  main, shade = {}, {}
  for i, arch in enumerate(archs):
    cmap = matplotlib.colormaps[ARCH_COLORMAPS[i % len(ARCH_COLORMAPS)]]
    main[arch] = cmap(0.7)
    members = [g for g in groups if g.arch == arch]
    for j, g in enumerate(members):
      shade[g.label] = cmap(0.45 + 0.5 * j / max(len(members) - 1, 1))
  return main, shade


def _style_legend(ax, groups, main) -> None:
  """Two legends: colour = architecture, marker = method."""
  archs = list(dict.fromkeys(g.arch for g in groups))
  methods = [m for m in METHOD_MARKERS if any(g.method == m for g in groups)]
  by_arch = ax.legend(handles=[mpl_lines.Line2D(
      [], [], color=main[a], marker="o", linestyle="", label=a)
                               for a in archs], title="architecture",
                      fontsize=7, title_fontsize=7, loc="lower left")
  ax.add_artist(by_arch)
  ax.legend(handles=[mpl_lines.Line2D(
      [], [], color="0.3", marker=METHOD_MARKERS[m], linestyle="", label=m)
                     for m in methods], title="method", fontsize=7,
            title_fontsize=7, loc="lower right")


def _level_curve(group: SeedGroup, shift: str, name: Optional[str]):
  """Levels, mean accuracy (%) and std over seeds for one shift curve."""
  levels = sorted({r["level"] for rs in group.rows.values() for r in rs
                   if r["shift"] == shift and r["level"] is not None and
                   (name is None or r["name"] == name)})
  means, stds = [], []
  for lv in levels:
    m, s = group.stat(lambda rs, lv=lv: np.mean(
        [r["accuracy"] for r in rs if r["shift"] == shift and
         r["level"] == lv and (name is None or r["name"] == name)] or
        [np.nan]))
    means.append(100 * m)
    stds.append(100 * s)
  return levels, np.array(means), np.array(stds)


def plots(rows: Sequence[dict], folder: str) -> List[str]:
  """Writes the study's PNG plots; returns their paths.

  `accuracy_vs_size.png` (clean and mean shifted accuracy against model
  size), `accuracy_vs_severity.png` (corruptions, mean over names) and
  `accuracy_vs_eps.png` (one panel per attack). Shifts without rows are
  left out.

  Args:
    rows: result rows.
    folder: output folder (created if missing).

  Returns:
    Paths of the files written.
  """
  io.makedirs(folder)
  groups = seed_groups(rows)
  main, shade = _arch_colors(groups)
  paths = []

  fig = mpl_figure.Figure(figsize=(18, 4.6))
  axes = fig.subplots(1, 4)
  for ax, shift in zip(axes, ("clean",) + claims_data.SHIFT_TYPES):
    for g in groups:
      if shift == "clean":
        fn = metrics.clean_accuracy
      else:
        fn = lambda rs, shift=shift: metrics.mean_accuracy(rs, shift)
      m, s = g.stat(lambda rs, fn=fn: _or_nan(fn(rs)))
      if np.isfinite(m):
        ax.errorbar([g.size_kb], [100 * m],
                    yerr=[100 * s] if np.isfinite(s) else None,
                    marker=METHOD_MARKERS.get(g.method, "."), markersize=8,
                    color=main[g.arch], linestyle="", capsize=3)
    ax.set_xscale("log")
    ax.set_xlabel("model size (kB, bits actually needed)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(shift if shift == "clean" else f"{shift} (mean)")
    ax.grid(alpha=0.3)
  _style_legend(axes[0], groups, main)
  fig.tight_layout()
  paths.append(os.path.join(folder, "accuracy_vs_size.png"))
  save_png(fig, paths[-1])

  for shift, xlabel, fname in (("corruption", "severity",
                                "accuracy_vs_severity.png"),
                               ("adversarial", "eps (pixel units)",
                                "accuracy_vs_eps.png")):
    names = sorted({r["name"] for r in rows if r["shift"] == shift})
    if not names:
      continue
    panels = [None] if shift == "corruption" else names
    fig = mpl_figure.Figure(figsize=(6.5 * len(panels), 4.6))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, name in zip(axes, panels):
      for g in groups:
        xs, ys, err = _level_curve(g, shift, name)
        if xs:
          ax.errorbar(xs, ys, yerr=err if np.isfinite(err).any() else None,
                      marker=METHOD_MARKERS.get(g.method, "."),
                      color=shade[g.label], label=g.label, capsize=3)
      ax.set_xlabel(xlabel)
      ax.set_ylabel("accuracy (%)")
      ax.set_title(f"{shift}: " + ("mean over corruptions" if name is None
                                   else name))
      ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=6, loc="best")
    fig.tight_layout()
    paths.append(os.path.join(folder, fname))
    save_png(fig, paths[-1])
  return paths


def save_png(fig: mpl_figure.Figure, path: str) -> None:
  """Renders `fig` in memory and writes it in one go (local or bucket)."""
  buf = stdio.BytesIO()
  fig.savefig(buf, format="png", dpi=110)
  io.write_atomic(path, buf.getvalue())


def plots_caption(rows: Sequence[dict]) -> str:
  """What the plots' colours, markers and error bars mean for `rows`."""
  seeds = sorted({g.num_seeds for g in seed_groups(rows)})
  text = "Colour: architecture (shades: its models); marker: method."
  if seeds and seeds[-1] > 1:
    text += (" Points: mean over seeds (" + "/".join(map(str, seeds)) +
             " seeds per model); error bars: +- 1 standard deviation.")
  else:
    text += " One seed per model: no error bars."
  return text
