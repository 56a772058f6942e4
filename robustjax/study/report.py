"""Study report: `report.md` (tables + claims), `results.csv` and PNG plots.

`write_report(rows, folder)` renders from rows in memory;
`render(workdir, output_dir=None)` re-renders everything from what a workdir
holds (its journal, `config.json`, `progress.json`), a study still running
or interrupted included: such a report says how many cells it covers. The
rows always come from the journal (`results.jsonl` only for a workdir
without one), so a report cannot contradict it. Reading never writes into
the workdir: `render` writes where it is told (the workdir by default, or
`output_dir`), and `render_text(workdir)` returns the report without
writing anything (a read-only workdir: a colleague's results, a mounted
bucket snapshot).

The plots are drawn by `robustjax.study.plots`. Every file goes through
robustjax.io, so the workdir may be a bucket (`gs://...`).
"""

import collections
import csv
import io as stdio
import os
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from robustjax import io
from robustjax.robustness import metrics
from robustjax.study import journal as journal_lib
from robustjax.study import plots as plots_lib
from robustjax.study.claims import analysis as claims_analysis
from robustjax.study.claims import data as claims_data
from robustjax.study.claims import report as claims_report

RESULTS = "results.jsonl"
CONFIG = "config.json"
JOURNAL = "journal.jsonl"  # The study's journal (robustjax/study/journal.py).
ENVIRONMENT = "environment.json"  # The machine a study ran on.
# Written by the study runner: {"cells_total": int, ...}; lets a report of a
# partial run say how far it got.
PROGRESS = "progress.json"
CSV_FIELDS = ("model_id", "arch", "method", "setting", "size_bits",
              "sparsity", "shift", "name", "level", "accuracy", "n",
              "original_id", "weights", "seed")


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
  models = claims_data.summarize_models(rows)
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
        " | ".join(_pct(m.mean[s]) for s in claims_data.SHIFT_TYPES) + " | " +
        " | ".join("n/a" if not np.isfinite(m.robustness[s]) else
                   f"{m.robustness[s]:.3f}" for s in claims_data.SHIFT_TYPES) +
        f" | {'n/a' if not np.isfinite(mce) else f'{mce:.3f}'} |")
  return "\n".join(lines)


def level_table(rows: Sequence[dict], shift: str) -> str:
  """Accuracy per model at each level (severity / eps), averaged over names."""
  acc = collections.defaultdict(lambda: collections.defaultdict(list))
  for r in rows:
    if r["shift"] == shift:
      # Corruptions read from a dataset's files ("<dataset>/<corruption>")
      # get their own mean, beside the generated ones'.
      source = r["name"].rpartition("/")[0]
      label = r["name"] if shift == "adversarial" else (
          f"mean ({source})" if source else "mean")
      acc[(r["model_id"], label)][r["level"]].append(r["accuracy"])
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


def _journal(workdir: str) -> Optional[journal_lib.Journal]:
  """The workdir's journal, read only (damaged records left out), or None."""
  path = os.path.join(workdir, JOURNAL)
  if not journal_lib.exists(path):
    return None
  return journal_lib.Journal(path, check=journal_lib.check_cell)


def read_rows(workdir: str) -> List[dict]:
  """Result rows of a workdir, deduplicated (last write wins).

  Args:
    workdir: a study workdir.

  Returns:
    The rows of the workdir's journal; for a workdir without one, those of
    `workdir/results.jsonl` (a torn last line is dropped), one per
    (model_id, seed, shift, name, level).
  """
  journal = _journal(workdir)
  if journal is not None:
    return journal_lib.rows_of(journal)
  unique = {}
  for r in io.read_jsonl(os.path.join(workdir, RESULTS)):
    unique[(r["model_id"], r.get("seed"), r["shift"], r["name"],
            r["level"])] = r
  return list(unique.values())


def write_progress(workdir: str, cells_total: int, **extra) -> None:
  """Records the expected number of result cells of a study (for `render`).

  Args:
    workdir: the study's workdir.
    cells_total: number of (model, shift, name) cells of the whole grid.
    **extra: more JSON fields to keep (e.g. models_total).
  """
  io.write_json(os.path.join(workdir, PROGRESS),
                {"cells_total": int(cells_total), **extra})


def completeness(workdir: str, rows: Sequence[dict]) -> Dict[str, object]:
  """How much of the study `rows` cover.

  Args:
    workdir: the study's workdir (its `progress.json`, if any, gives the
      expected number of cells).
    rows: the workdir's rows.

  Returns:
    {"cells_done": int, "cells_total": int or None, "complete": True, False
    or None (unknown)}; a cell is one (model, seed, shift, name).
  """
  done = len({(r["model_id"], r.get("seed"), r["shift"], r["name"])
              for r in rows})
  path = os.path.join(workdir, PROGRESS)
  total = None
  if io.exists(path):
    total = io.read_json(path).get("cells_total")
  return {"cells_done": done, "cells_total": total,
          "complete": None if total is None else done >= total}


def status_note(status: Dict[str, object]) -> str:
  """A report line saying whether the results are complete."""
  done, total = status["cells_done"], status["cells_total"]
  if status["complete"] is None:
    return (f"**Completeness unknown:** {done} cells; this workdir has no "
            f"`{PROGRESS}` giving the study's total.")
  if status["complete"]:
    return f"Complete: {done} of {total} cells."
  return (f"**Partial: {done} of {total} cells ({100 * done / total:.0f} %).** "
          "The study is still running or was interrupted: the tables, plots "
          "and claims below cover only the cells finished so far. Re-run the "
          "same `launch/study.py` command to finish it.")


def is_writable(folder: str) -> bool:
  """False for a local folder this process may not write (a read-only mount,
  no permission); True otherwise (a bucket is assumed writable). A missing
  folder is judged by its nearest existing parent."""
  if not io.is_local(folder):
    return True
  path = os.path.abspath(folder)
  while not os.path.exists(path) and os.path.dirname(path) != path:
    path = os.path.dirname(path)
  return os.access(path, os.W_OK)


def _read(workdir: str):
  """(rows, write_report's keyword arguments) of a workdir; writes nothing.

  Raises:
    FileNotFoundError: if the workdir has no result rows yet.
  """
  examples = None
  journal = _journal(workdir)
  if journal is not None:
    rows, examples = journal_lib.rows_of(journal), journal_lib.examples_of(
        journal)
  else:
    rows = read_rows(workdir)
  if not rows:
    raise FileNotFoundError(
        f"No result rows in {workdir} (neither {JOURNAL} nor {RESULTS}): "
        "is this a study workdir? Run launch/study.py --workdir=... first "
        "(a report can be rendered as soon as its first cell is written).")
  title, config_notes, config = "", [], None
  config_path = os.path.join(workdir, CONFIG)
  if io.exists(config_path):
    config = io.read_json(config_path)
    title = config.get("study_name", "") or ""
    config_notes = list((config.get("study") or {}).get("notes") or ())
  notes = config_notes + [""] * bool(config_notes) + [
      status_note(completeness(workdir, rows)), f"{len(rows)} result rows."]
  env_path = os.path.join(workdir, ENVIRONMENT)
  if io.exists(env_path):
    env = io.read_json(env_path)
    notes.append(f"Machine: {env.get('machine')}; {env.get('devices')}; "
                 f"jax {env.get('jax')}"
                 + (f"; precision {env['precision']} (float32 matmuls: "
                    f"{env.get('float32_matmuls')})"
                    if env.get("precision") else "")
                 + (f"; evaluated in {env['evaluation_precision']}"
                    if env.get("evaluation_precision", env.get("precision"))
                    != env.get("precision") else "")
                 + (f"; XLA_FLAGS `{env['xla_flags']}`"
                    if env.get("xla_flags") else "") + ".")
  return rows, dict(title=title, notes=notes, examples=examples,
                    options=claims_analysis.Options.from_config(config))


def render(workdir: str, output_dir: Optional[str] = None) -> str:
  """Re-renders report.md, results.csv and plots/ from a workdir's files.

  Works on a finished study and on one still running or interrupted (the
  report then says "Partial: N of M cells"). Only `output_dir` is written.

  Args:
    workdir: a study workdir holding a journal (or, for older workdirs,
      `results.jsonl`), and normally `config.json` and `progress.json`.
    output_dir: where report.md, results.csv and plots/ go (created if
      missing); default: `workdir`.

  Returns:
    The path of `report.md`.

  Raises:
    FileNotFoundError: if the workdir has no result rows yet.
  """
  rows, kwargs = _read(workdir)
  folder = output_dir or workdir
  write_csv(rows, os.path.join(folder, "results.csv"))
  return write_report(rows, folder, **kwargs)


def render_text(workdir: str) -> str:
  """The report of a workdir as Markdown, writing nothing anywhere.

  The same text `render` writes, without the plots (not drawn).

  Args:
    workdir: as `render`.

  Raises:
    FileNotFoundError: if the workdir has no result rows yet.
  """
  rows, kwargs = _read(workdir)
  return _markdown(rows, None, **kwargs)


def write_report(rows: Sequence[dict], workdir: str, title: str = "",
                 notes: Sequence[str] = (),
                 examples: Optional[Mapping] = None,
                 options: Optional[claims_analysis.Options] = None) -> str:
  """Writes `workdir/report.md` and `workdir/plots/*.png`; returns the path.

  Args:
    rows: the study's result rows.
    workdir: output folder.
    title: the report's title.
    notes: lines written under the title.
    examples: per-example correctness, (model_id, seed, shift, name) ->
      bool [levels, n] (see `claims.data.StudyData`); without it the claims
      are reported as not testable.
    options: how the claims are tested (default: `claims.analysis.Options`).
  """
  path = os.path.join(workdir, "report.md")
  io.write_atomic(path, _markdown(rows, workdir, title, notes, examples,
                                  options))
  return path


def _markdown(rows: Sequence[dict], folder: Optional[str], title: str = "",
              notes: Sequence[str] = (), examples: Optional[Mapping] = None,
              options: Optional[claims_analysis.Options] = None) -> str:
  """The report's Markdown; its plots are drawn into `folder`/plots (None:
  not drawn, and the report says so)."""
  data = claims_data.StudyData(rows, examples or {})
  result = claims_analysis.test_claims(data, options or
                                       claims_analysis.Options())
  forest, plot_paths = None, []
  if folder is not None:
    plot_paths = plots_lib.plots(rows, os.path.join(folder, "plots"))
    forest = f"plots/{claims_report.FOREST_PNG}"
    plots_lib.save_png(claims_report.forest_figure(result),
              os.path.join(folder, forest))
  out = [f"# Robustness study report{': ' + title if title else ''}", ""]
  out += list(notes) + [""] if notes else []
  out += [claims_report.render_markdown(
      result, claims_analysis.sanity_checks(data), forest=forest), ""]
  out += ["## Models (accuracy in %)", "", model_table(rows), "",
          "## Corruptions: accuracy by severity (mean over corruptions)", "",
          level_table(rows, "corruption"), "",
          "## Adversarial: accuracy by eps", "",
          level_table(rows, "adversarial"), "", "## Plots", ""]
  if folder is None:
    out += ["Not drawn: this report was rendered without writing files "
            "(`launch/report.py --output_dir=DIR` draws them).", ""]
  else:
    out += [plots_lib.plots_caption(rows), ""]
  out += [f"![{os.path.basename(p)}](plots/{os.path.basename(p)})"
          for p in plot_paths]
  return "\n".join(out) + "\n"
