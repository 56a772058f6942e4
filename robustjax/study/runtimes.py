r"""The runtime ledger: how long the committed study took, run by run.

A study workdir's `timing.jsonl` says where one run's time went (wall and
JAX trace + compile seconds per stage, the machine, the allocator, the
code's commit and the peak memory). The ledger `runtimes.jsonl`, kept next
to the committed results (docs/results/default), collects one record per
timed run of that same study, on any machine:

  python -m robustjax.study.summary --results=docs/results/default \
      --add_run=workdirs/default --source="README command (1), fresh clone" \
      --readme=README.md

checks that the workdir ran the committed config to the end, compares its
results.csv with the committed one (bit-identical, or how many rows moved:
other CPU types round differently), appends the record and regenerates the
runtime page `runtimes.md` beside the ledger (`page`: the committed run's
stages and every run of the ledger) and README's one runtime line (`line`).
So every runtime figure comes from committed files, and
`tests/readme_test.py` fails when a page disagrees with them.

Records (one JSON object per line): `finished`, `machine`, `devices`,
`malloc`, `code` (the commit that ran; None where unknown), `source` (how
the run was made), `committed_in` (records taken from git history: the
commit that committed the run's timing.jsonl), `segments`, `wall_s`,
`compile_s`, `peak_rss_mb` (None where the run did not record it),
`results` ('identical' or 'N of M rows differ').
"""

import csv
import io as io_lib
import json
import os
import statistics
from typing import List, Optional

from robustjax import io
from robustjax.study import report as report_lib

LEDGER = "runtimes.jsonl"
TIMING = "timing.jsonl"  # A study's own timing, one line per run segment.
CONFIG = "config.json"
RESULTS_CSV = "results.csv"
PAGE = "runtimes.md"  # The generated page beside the ledger.
SHOWN = 8  # Newest runs `table` shows by default; the ledger keeps them all.


def read(results: str) -> List[dict]:
  """The ledger of the committed results folder `results` (oldest first)."""
  return io.read_jsonl(os.path.join(results, LEDGER))


def compare_results(new: str, committed: str) -> str:
  """'identical', or 'N of M rows differ' (two results.csv texts).

  Rows are matched on (model, seed, shift, name, level), whatever their
  order; a row differs when any other field does (usually the accuracy) or
  when only one side has it.
  """
  if new == committed:
    return "identical"
  key = ("model_id", "seed", "shift", "name", "level")
  rows = [{tuple(r[k] for k in key): r
           for r in csv.DictReader(io_lib.StringIO(text))}
          for text in (new, committed)]
  moved = sum(rows[0].get(k) != rows[1].get(k)
              for k in set(rows[0]) | set(rows[1]))
  if not moved:  # The same rows in another order.
    return "identical"
  return f"{moved} of {len(rows[1])} rows differ"


def _config_differences(a: dict, b: dict) -> List[str]:
  keys = sorted(set(a) | set(b))
  return [k for k in keys if a.get(k) != b.get(k)]


def record_of(workdir: str, results: str, source: str) -> dict:
  """The ledger record of the finished study run in `workdir`.

  Args:
    workdir: a study workdir (`launch/study.py --workdir`), finished.
    results: the committed results folder whose study it must have run.
    source: how the run was made, e.g. 'README command (1), fresh clone'.

  Raises:
    ValueError: (one sentence, what to do) the workdir has no timing, ran
      another config, or is not finished.
  """
  segments = io.read_jsonl(os.path.join(workdir, TIMING))
  if not segments:
    raise ValueError(f"{workdir} has no {TIMING}: pass the --workdir of a "
                     "finished launch/study.py run.")
  mine = io.read_json(os.path.join(workdir, CONFIG))
  theirs = io.read_json(os.path.join(results, CONFIG))
  differ = _config_differences(mine, theirs)
  if differ:
    raise ValueError(f"{workdir} ran another config than {results} (fields "
                     f"{', '.join(differ)} differ); the ledger times the "
                     "committed study only: run its config.")
  status = report_lib.completeness(
      workdir, io.read_jsonl(os.path.join(workdir, report_lib.RESULTS)))
  if status["complete"] is None:
    raise ValueError(f"{workdir} has no {report_lib.PROGRESS}, so whether "
                     "its study finished is unknown: pass the --workdir of "
                     "a launch/study.py run.")
  if not status["complete"]:
    raise ValueError(f"The study in {workdir} is not finished "
                     f"({status['cells_done']} of {status['cells_total']} "
                     "cells): re-run the same launch/study.py command to "
                     "finish it, then add it.")
  last = segments[-1]
  peaks = [s.get("peak_rss_mb") for s in segments]
  return {
      "finished": last["finished"], "machine": last.get("machine"),
      "devices": last.get("devices"), "malloc": last.get("malloc"),
      "code": last.get("code"), "source": source,
      "segments": len(segments),
      "wall_s": round(sum(s["total"]["wall_s"] for s in segments), 3),
      "compile_s": round(sum(s["total"]["compile_s"] for s in segments), 3),
      "peak_rss_mb": None if None in peaks else max(peaks),
      "results": compare_results(
          io.read_text(os.path.join(workdir, RESULTS_CSV)),
          io.read_text(os.path.join(results, RESULTS_CSV)))}


def add(results: str, record: dict) -> List[dict]:
  """Appends `record` to the ledger of `results` (rewritten atomically).

  Raises:
    ValueError: the same run (machine and finishing time) is there already.
  """
  ledger = read(results)
  if any((r["machine"], r["finished"]) == (record["machine"],
                                           record["finished"])
         for r in ledger):
    raise ValueError(f"The run finished {record['finished']} on "
                     f"{record['machine']} is in {LEDGER} already.")
  ledger.append(record)
  ledger.sort(key=lambda r: r["finished"])
  io.write_atomic(os.path.join(results, LEDGER), "".join(
      json.dumps(r, sort_keys=True) + "\n" for r in ledger))
  return ledger


def allocator(malloc: Optional[str]) -> str:
  """'mimalloc 3.4.3', 'glibc, huge pages', 'glibc' (from `malloc`)."""
  if not malloc:
    return "glibc"
  if "hugetlb" in malloc and malloc.startswith("glibc"):
    return "glibc, huge pages"
  return malloc.split(" (", 1)[0]


def _code(record: dict) -> str:
  if record.get("code"):
    return record["code"]
  if record.get("committed_in"):
    return f"committed in {record['committed_in']}"
  return "n/a"


def table(results: str, shown: int = SHOWN) -> str:
  """Markdown: a line per machine, and the newest `shown` runs."""
  ledger = read(results)
  if not ledger:
    return f"Runtime by run: no {LEDGER} in the results."
  out = [f"Runtime of this study by run (`{LEDGER}`: {len(ledger)} runs; "
         "the study loop's wall time, of which JAX trace + compile):", ""]
  machines = sorted({r["machine"] for r in ledger})
  for m in machines:
    runs = [r for r in ledger if r["machine"] == m]
    walls = [r["wall_s"] / 60 for r in runs]
    newest = runs[-1]
    out.append(f"- {m}: {len(runs)} run(s), {min(walls):.1f}-"
               f"{max(walls):.1f} min (median "
               f"{statistics.median(walls):.1f}); newest "
               f"{newest['finished'][:10]}: {newest['wall_s'] / 60:.1f} min, "
               f"compile {100 * newest['compile_s'] / newest['wall_s']:.1f} %.")
  out += ["", "| finished | machine | code | allocator | study loop | "
          "compile | peak memory | results.csv vs committed |",
          "|---|---|---|---|---|---|---|---|"]
  for r in reversed(ledger[-shown:]):
    peak = ("n/a" if r.get("peak_rss_mb") is None
            else f"{r['peak_rss_mb'] / 1024:.2f} GiB")
    out.append(
        f"| {r['finished'][:16]} | {r['machine']}, {r['devices']} | "
        f"{_code(r)} | {allocator(r.get('malloc'))} | "
        f"{r['wall_s'] / 60:.1f} min | {r['compile_s']:.0f} s "
        f"({100 * r['compile_s'] / r['wall_s']:.1f} %) | {peak} | "
        f"{r['results']} |")
  return "\n".join(out)



def _timing(results: str) -> List[dict]:
  path = os.path.join(results, TIMING)
  return io.read_jsonl(path) if io.exists(path) else []


def _totals(segments: List[dict]):
  wall = sum(seg["total"]["wall_s"] for seg in segments)
  comp = sum(seg["total"]["compile_s"] for seg in segments)
  machines = sorted({f"{seg.get('machine', '?')}, {seg.get('devices', '?')}"
                     for seg in segments})
  return wall, comp, "; ".join(machines)


def stage_table(results: str) -> str:
  """Where the committed run's time went, from `timing.jsonl` (all segments)."""
  segments = _timing(results)
  if not segments:
    return f"Runtime: not recorded (no {TIMING} in the results)."
  stages = {}
  for seg in segments:
    for name, v in seg["stages"].items():
      acc = stages.setdefault(name, [0.0, 0.0])
      acc[0] += v["wall_s"]
      acc[1] += v["compile_s"]
  wall, comp, machines = _totals(segments)
  out = [f"Runtime of this run (from `{TIMING}`, {len(segments)} "
         f"segment(s), {machines}): **{wall / 60:.1f} min** wall "
         f"in the study loop, of which {comp / 60:.1f} min "
         f"({100 * comp / wall:.0f} %) JAX tracing + compilation.", "",
         "| stage | wall s | compile s |", "|---|---|---|"]
  for name, (w, c) in sorted(stages.items(), key=lambda kv: -kv[1][0]):
    out.append(f"| {name} | {w:.0f} | {c:.0f} |")
  return "\n".join(out)


def line(results: str, what: str) -> str:
  """One line for the README: the committed run's time, linking to `page`.

  Args:
    results: the results folder (relative to the README) holding
      `timing.jsonl`, the ledger and the page.
    what: the run's name for the reader, e.g. 'README command (1)'.
  """
  link = f"{results}/{PAGE}"
  segments = _timing(results)
  if not segments:
    return f"Runtime: not recorded (no {TIMING} in `{results}`)."
  wall, comp, machines = _totals(segments)
  return (f"Runtime: {what} takes **{wall / 60:.1f} min** in the study loop "
          f"({100 * comp / wall:.0f} % of it JAX tracing + compilation) on "
          f"{machines}; where the time goes and every timed run: "
          f"[{link}]({link}).")


def page(results: str, command: str) -> str:
  """The generated runtime page (`runtimes.md`) of the results folder.

  Args:
    results: the results folder holding `timing.jsonl` and the ledger.
    command: the summary command that writes the page (shown on it).
  """
  ledger = read(results)
  return "\n".join([
      f"# Runtime of `{results}`", "",
      f"Generated from this folder's `{TIMING}` (the committed run) and "
      f"`{LEDGER}` (one record per timed run of the same config, on any "
      f"machine) by `{command}`; `tests/readme_test.py` checks that it "
      "matches.", "",
      "## The committed run", "",
      stage_table(results), "",
      "## Every timed run", "",
      table(results, shown=max(len(ledger), 1)), "",
      "The last column compares the run's `results.csv` with the committed "
      "one. The same config on the same CPU type and XLA CPU device count "
      "gives bit-identical results; other CPU types round floats "
      "differently, so expect some rows to differ there.", "",
      "## Adding a run", "",
      "Run the study with the committed config (README command (1)), e.g. "
      "in a fresh clone on a machine type not listed yet, then add its "
      "workdir to the ledger and regenerate this page and the README:", "",
      "```bash",
      f"{command} --add_run=workdirs/default "
      "--source=\"README command (1), fresh clone\"",
      "```", "",
      f"and commit `{LEDGER}`, this page and README.md. It refuses an "
      "unfinished run or one of another config.", ""])
