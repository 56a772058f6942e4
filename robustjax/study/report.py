"""Study report: `report.md` (tables + claims) and PNG plots from rows."""

import collections
import csv
import io as stdio
import os
from typing import List, Mapping, Optional, Sequence

import numpy as np

from robustjax import io
from robustjax.robustness import metrics
from robustjax.study import claims as claims_lib

CSV_FIELDS = ("model_id", "arch", "method", "setting", "size_bits",
              "sparsity", "shift", "name", "level", "accuracy", "n",
              "original_id", "weights")


def write_csv(rows: Sequence[dict], path: str) -> None:
  """CSV export of the result rows (settings as JSON-ish text)."""
  buf = stdio.StringIO()
  writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
  writer.writeheader()
  for r in rows:
    writer.writerow({**r, "setting": r.get("setting")})
  io.write_atomic(path, buf.getvalue())


def _setting_str(setting: dict) -> str:
  return ", ".join(f"{k}={v}" for k, v in sorted(setting.items())) or "-"


def _pct(x):
  return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.1f}"


def model_table(rows: Sequence[dict]) -> str:
  """One line per model: size, clean and mean shifted accuracies, R, mCE."""
  models = claims_lib.summarize_models(rows)
  by_model = collections.defaultdict(list)
  for r in rows:
    by_model[r["model_id"]].append(r)
  lines = ["| model | method | setting | size (kB) | sparsity | clean | "
           "domain | corruption | adversarial | R domain | R corr. | R adv. "
           "| mCE |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  order = sorted(models.values(), key=lambda m: (m.arch, m.method != "original",
                                                 m.method, str(m.setting)))
  for m in order:
    base = by_model.get(m.original_id or "", [])
    mce = metrics.mean_corruption_error(by_model[m.model_id], base) \
        if base else float("nan")
    lines.append(
        f"| {m.model_id} | {m.method} | {_setting_str(m.setting)} | "
        f"{m.size_bits / 8e3:.1f} | {m.sparsity:.2f} | {_pct(m.clean)} | " +
        " | ".join(_pct(m.mean[s]) for s in claims_lib.SHIFTS) + " | " +
        " | ".join("n/a" if not np.isfinite(m.robustness[s]) else
                   f"{m.robustness[s]:.3f}" for s in claims_lib.SHIFTS) +
        f" | {'n/a' if not np.isfinite(mce) else f'{mce:.3f}'} |")
  return "\n".join(lines)


def level_table(rows: Sequence[dict], shift: str) -> str:
  """Accuracy per model at each level (severity / eps), averaged over names."""
  acc = collections.defaultdict(lambda: collections.defaultdict(list))
  for r in rows:
    if r["shift"] == shift:
      acc[(r["model_id"], r["name"] if shift == "adversarial" else "mean")][
          r["level"]].append(r["accuracy"])
  if not acc:
    return "(no rows)"
  levels = sorted({lv for d in acc.values() for lv in d})
  head = "| model | " + ("attack" if shift == "adversarial" else "") + \
      " | " + " | ".join(str(lv) for lv in levels) + " |"
  lines = [head, "|" + "---|" * (len(levels) + 2)]
  for (model_id, name), d in sorted(acc.items()):
    lines.append(f"| {model_id} | {name} | " + " | ".join(
        _pct(np.mean(d[lv])) if lv in d else "" for lv in levels) + " |")
  return "\n".join(lines)


def plots(rows: Sequence[dict], folder: str) -> List[str]:
  """Writes the study's PNG plots; returns their paths."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  os.makedirs(folder, exist_ok=True)
  models = claims_lib.summarize_models(rows)
  markers = {"original": "*", "prune": "o", "distill": "s",
             "distill_control": "D", "quantize": "^"}
  paths = []

  fig, axes = plt.subplots(1, 4, figsize=(18, 4.2))
  for ax, shift in zip(axes, ("clean",) + claims_lib.SHIFTS):
    for method in markers:
      ms = [m for m in models.values() if m.method == method]
      ys = [m.clean if shift == "clean" else m.mean[shift] for m in ms]
      if ms:
        ax.scatter([m.size_bits / 8e3 for m in ms], [100 * y for y in ys],
                   marker=markers[method], label=method, s=50)
    ax.set_xscale("log")
    ax.set_xlabel("model size (kB, bits actually needed)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(shift if shift == "clean" else f"{shift} (mean)")
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  paths.append(os.path.join(folder, "accuracy_vs_size.png"))
  fig.savefig(paths[-1], dpi=110)
  plt.close(fig)

  for shift, xlabel, fname in (("corruption", "severity",
                                "accuracy_vs_severity.png"),
                               ("adversarial", "eps (pixel units)",
                                "accuracy_vs_eps.png")):
    names = sorted({r["name"] for r in rows if r["shift"] == shift})
    if not names:
      continue
    groups = [None] if shift == "corruption" else names
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4.2),
                             squeeze=False)
    for ax, name in zip(axes[0], groups):
      for i, model_id in enumerate(sorted(models)):
        pts = collections.defaultdict(list)
        for r in rows:
          if r["model_id"] == model_id and r["shift"] == shift and (
              name is None or r["name"] == name):
            pts[r["level"]].append(r["accuracy"])
        if pts:
          xs = sorted(pts)
          ax.plot(xs, [100 * np.mean(pts[x]) for x in xs],
                  marker=markers.get(models[model_id].method, "."),
                  color=plt.cm.tab20(i % 20), label=model_id)
      ax.set_xlabel(xlabel)
      ax.set_ylabel("accuracy (%)")
      ax.set_title(f"{shift}: " + ("mean over corruptions" if name is None
                                   else name))
      ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=6, loc="best")
    fig.tight_layout()
    paths.append(os.path.join(folder, fname))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
  return paths


def write_report(rows: Sequence[dict], workdir: str, title: str = "",
                 notes: Sequence[str] = (),
                 examples: Optional[Mapping] = None) -> str:
  """Writes `workdir/report.md` and `workdir/plots/*.png`; returns the path.

  Args:
    rows: the study's result rows.
    workdir: output folder.
    title: the report's title.
    notes: lines written under the title.
    examples: per-example correctness, (model_id, seed, shift, name) ->
      bool [levels, n] (see `claims.StudyData`); without it the claims are
      reported as not testable.
  """
  data = claims_lib.StudyData(rows, examples or {})
  verdicts = claims_lib.test_claims(data)
  plot_paths = plots(rows, os.path.join(workdir, "plots"))
  out = [f"# Robustness study report{': ' + title if title else ''}", ""]
  out += list(notes) + [""] if notes else []
  out += [claims_lib.render_markdown(
      verdicts, claims_lib.sanity_checks(data)), ""]
  out += ["## Models (accuracy in %)", "", model_table(rows), "",
          "## Corruptions: accuracy by severity (mean over corruptions)", "",
          level_table(rows, "corruption"), "",
          "## Adversarial: accuracy by eps", "",
          level_table(rows, "adversarial"), "", "## Plots", ""]
  out += [f"![{os.path.basename(p)}](plots/{os.path.basename(p)})"
          for p in plot_paths]
  path = os.path.join(workdir, "report.md")
  io.write_atomic(path, "\n".join(out) + "\n")
  return path
