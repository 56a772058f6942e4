r"""README tables generated from a committed study workdir.

  python -m robustjax.study.summary --results=docs/results/default \
      --readme=README.md

replaces the text between `<!-- results:begin -->` and
`<!-- results:end -->` in the README with tables computed from the study's
journal (rows + per-example results) in `--results` (a folder or a bucket
URL): the claims' verdicts with their pooled effects, family-corrected
intervals and minimum detectable effects, the negative control, the models
left out (and, with `--replicate=RESULTS`, the primary verdicts of a second
study of the same grid with another `--config.seed`), the model table
(means over seeds) and one runtime line. The same command writes the
runtime page `runtimes.md` beside the timed results (`--quick` if given,
else `--results`): where the committed run's time went (`timing.jsonl`)
and every timed run of the study, on every machine (the ledger
`runtimes.jsonl`, robustjax/study/runtimes.py). `tests/readme_test.py`
regenerates both and fails when a committed file disagrees.

To add a timed run (e.g. README command (1) on another machine type) to the
ledger and regenerate the block and the page:

  python -m robustjax.study.summary --results=docs/results/default \
      --add_run=workdirs/default --source="README command (1), fresh clone" \
      --readme=README.md
"""

import argparse
import math
import os
import re
from typing import Dict, Optional

from robustjax import io
from robustjax.study.claims import analysis as claims_analysis
from robustjax.study.claims import data as claims_data
from robustjax.study.claims import report as claims_report
from robustjax.study import journal as journal_lib
from robustjax.study import report as report_lib
from robustjax.study import runner
from robustjax.study import runtimes

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _cell_text(cell, mde: bool = True) -> str:
  if cell is None or cell.effect is None:
    return "n/a"
  text = f"{claims_report.fmt(cell.effect)} {cell.verdict}"
  if mde and math.isfinite(cell.mde):
    text += f" (MDE {cell.mde:.3f})"
  return text


def claims_table(result: claims_analysis.Claims) -> str:
  """Per claim: overall verdict, the primary cells, the secondary ones."""
  o = result.options
  primary = [s for s in claims_data.SHIFT_TYPES if s in o.primary]
  secondary = [s for s in claims_data.SHIFT_TYPES if s not in o.primary]
  out = ["| claim | verdict | " + " | ".join(
      f"{s} (primary): effect in R [corrected CI]" for s in primary) +
         " | " + " | ".join(f"{s} (secondary)" for s in secondary) + " |",
         "|---|---|" + "---|" * (len(primary) + len(secondary))]

  for v in result.verdicts:
    out.append(f"| ({v.key}) | **{v.verdict}** | " + " | ".join(
        _cell_text(v.deciding.get(s)) for s in primary + secondary) + " |")
  if result.control:
    by = {c.shift: c for c in result.control}
    out.append("| negative control | " + ", ".join(sorted(
        {c.verdict for c in result.control if c.effect is not None})) +
               " | " + " | ".join(_cell_text(by.get(s), False)
                                  for s in primary + secondary) + " |")
  return "\n".join(out)


def claims_of(results: str):
  """(rows, `claims.analysis.Claims`) of a study workdir."""
  journal = journal_lib.Journal(os.path.join(results, runner.JOURNAL))
  rows = journal_lib.rows_of(journal)
  data = claims_data.StudyData(rows, journal_lib.examples_of(journal))
  config_path = os.path.join(results, report_lib.CONFIG)
  config = io.read_json(config_path) if io.exists(config_path) else None
  return rows, claims_analysis.test_claims(
      data, claims_analysis.Options.from_config(config))


def replication(result: claims_analysis.Claims,
                other: claims_analysis.Claims, name: str) -> str:
  """Primary verdicts of two studies side by side; flags opposite ones."""
  flips = []
  cells = []
  for v, w in zip(result.verdicts, other.verdicts):
    for shift in result.options.primary:
      a, b = v.deciding.get(shift), w.deciding.get(shift)
      if a is None or b is None:
        continue
      cells.append(f"({v.key}) {shift}: {a.verdict} / {b.verdict}")
      if {a.verdict, b.verdict} == {"supported", "contradicted"}:
        flips.append(f"({v.key}) {shift}")
  return (f"Replication ({name}, primary cells, this run / that run): " +
          "; ".join(cells) + ". " +
          (f"**Opposite verdicts in {', '.join(flips)}.**" if flips else
           "No primary cell is supported in one and contradicted in the "
           "other."))


def block(results: str, replicate: Optional[str] = None,
          quick: Optional[str] = None, readme: str = "README.md") -> str:
  """The generated README block for the study workdir `results`.

  Args:
    results: the study workdir (or its committed copy) to summarise.
    replicate: optionally a second study of the same grid with another
      `--config.seed`, whose primary verdicts are shown beside.
    quick: optionally a study of the same grid with fewer seeds (README's
      first command): its verdicts and minimum detectable effects are shown
      too, and the runtime line is its run's (else `results`').
    readme: the README the block is for (named in the command it quotes).
  """
  rows, result = claims_of(results)
  env_path = os.path.join(results, runner.ENVIRONMENT)
  env = {}
  if io.exists(env_path):
    env = io.read_json(env_path)
  seeds = sorted({r["seed"] for r in rows})
  models = sorted({r["model_id"] for r in rows})
  status = report_lib.status_note(report_lib.completeness(results, rows))
  excluded = "; ".join(
      f"{e.model_id} ({100 * e.clean:.1f} % clean vs "
      f"{100 * e.original_clean:.1f} %)" for e in result.excluded) or "none"
  out = [BEGIN, "", status, "",
         f"Generated from `{results}` ({len(models)} models x {len(seeds)} "
         f"seeds, {len(rows)} rows; machine: {env.get('machine', 'unknown')}"
         f", {env.get('devices', '')}) by "
         f"`{command(results, replicate, quick, readme)}`; "
         "`tests/readme_test.py` checks that it matches.", "",
         claims_table(result), ""]
  if replicate:
    out += [replication(result, claims_of(replicate)[1],
                        f"`{replicate}`, the same grid with another "
                        "`--config.seed`"), ""]
  out += [claims_report.protocol(result), "",
         f"Models left out of the claims: {excluded}. MDE: the minimum "
         "detectable effect in R (80 % power at the cell's corrected level). "
         f"Forest plot: `{results}/plots/{claims_report.FOREST_PNG}`.", "",
         f"![claims]({results}/plots/{claims_report.FOREST_PNG})", "",
         "Models (means over seeds; accuracy in %; R here is the plain "
         "shifted / clean of each model's rows):", "",
         report_lib.model_table(rows), ""]
  if quick:
    q_rows, q_result = claims_of(quick)
    q_seeds = len({r["seed"] for r in q_rows})
    out += [f"README command (1) runs the same grid with {q_seeds} seeds "
            f"(`{quick}`): its verdicts and what it can detect (MDE; "
            "compare with the table above):", "",
            claims_table(q_result), "",
            runtimes.line(quick, "README command (1)"), ""]
  else:
    out += [runtimes.line(results, "this study"), ""]
  return "\n".join(out + [END])


def command(results: str, replicate: Optional[str] = None,
            quick: Optional[str] = None, readme: str = "README.md") -> str:
  """The summary command that writes these outputs (quoted in them)."""
  return (f"python -m robustjax.study.summary --results={results}"
          f"{f' --replicate={replicate}' if replicate else ''}"
          f"{f' --quick={quick}' if quick else ''} --readme={readme}")


def outputs(readme: str, results: str, replicate: Optional[str] = None,
            quick: Optional[str] = None) -> Dict[str, str]:
  """Every file the summary command writes: {path: text}.

  The README (`readme`, a file of the checkout) with its results block
  regenerated, and the runtime page `runtimes.md` in the timed results
  folder (`quick` if given, else `results`; a folder or a bucket URL).

  Raises:
    ValueError: the README has no results block.
  """
  with open(readme) as f:  # A file of the checkout (results may be a URL).
    text = f.read()
  if BEGIN not in text or END not in text:
    raise ValueError(f"{readme} has no {BEGIN} ... {END} block.")
  new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END),
               lambda _: block(results, replicate, quick, readme), text,
               flags=re.S)
  timed = quick or results
  return {readme: new,
          os.path.join(timed, runtimes.PAGE): runtimes.page(
              timed, command(results, replicate, quick, readme))}


def write(files: Dict[str, str]):
  """Writes `outputs`' files (atomically; bucket URLs too)."""
  for path, text in files.items():
    io.write_atomic(path, text)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--results", required=True)
  parser.add_argument("--readme", default="README.md")
  parser.add_argument("--replicate", default=None, metavar="RESULTS",
                      help="a second study of the same grid (another "
                      "--config.seed) whose primary verdicts are shown "
                      "beside")
  parser.add_argument("--quick", default=None, metavar="RESULTS",
                      help="a study of the same grid with fewer seeds "
                      "(README command (1)): its verdicts, MDEs and "
                      "runtimes are shown too")
  parser.add_argument("--add_run", default=None, metavar="WORKDIR",
                      help="first add this finished study workdir's timing "
                      f"to the ledger {runtimes.LEDGER} in --quick if given, "
                      "else in --results")
  parser.add_argument("--source", default="README command (1)",
                      help="with --add_run: how the run was made")
  args = parser.parse_args()
  if args.add_run:
    try:
      ledger = args.quick or args.results
      record = runtimes.record_of(args.add_run, ledger, args.source)
      runtimes.add(ledger, record)
    except ValueError as e:
      parser.error(str(e))
    print(f"Added to {runtimes.LEDGER}: {record}")
  write(outputs(args.readme, args.results, replicate=args.replicate,
                quick=args.quick))


if __name__ == "__main__":
  main()
