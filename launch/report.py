r"""Re-renders a study's report: `python launch/report.py --workdir=DIR`.

Rewrites `DIR/report.md`, `DIR/results.csv` and `DIR/plots/*.png` from the
rows of the study's journal (robustjax.study.report.render). Works while the
study is still running or after it was interrupted: the report then says
"Partial: N of M cells". Training is not touched; no accelerator is needed,
and no lock is taken (reading never gets in a running study's way).

A workdir that may not be written (a colleague's results, a mounted bucket
snapshot) is only read: `--print` prints the report and writes nothing;
`--output_dir=OUT` writes report.md, results.csv and plots/ into OUT.

  python launch/report.py --workdir=workdirs/default
  python launch/report.py --workdir=/mnt/snapshot/default --print
  python launch/report.py --workdir=/mnt/snapshot/default --output_dir=/tmp/r
"""

import errno
import os
import sys

from absl import app
from absl import flags
from absl import logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from launch import common as launch_common
from robustjax import io
from robustjax.study import report

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Study workdir (holds journal.jsonl).")
flags.DEFINE_bool("print", False, "Print report.md to stdout (on a read-only "
                  "workdir without --output_dir: print only, write nothing).")
flags.DEFINE_string("output_dir", None, "Write report.md, results.csv and "
                    "plots/ here instead of into the workdir.")
flags.mark_flags_as_required(["workdir"])

_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


def _render_into_workdir(workdir: str):
  """render(workdir)'s path, or None where the workdir refuses writes."""
  if not report.is_writable(workdir):
    return None
  try:
    return report.render(workdir)
  except Exception as e:  # pylint: disable=broad-except
    error = io.storage_os_error(e)
    if error is None or error.errno not in _READ_ONLY:
      raise
    return None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  workdir, output_dir = FLAGS.workdir, FLAGS.output_dir
  try:
    with launch_common.fatal_errors(output_dir or workdir):
      path = (report.render(workdir, output_dir) if output_dir else
              _render_into_workdir(workdir))
      text = io.read_text(path) if path else None
      if path is None and FLAGS.print:
        text = report.render_text(workdir)
  except FileNotFoundError as e:
    sys.stderr.write(f"FATAL {e}\n")
    sys.exit(1)
  if text is None:
    sys.stderr.write(
        f"FATAL {workdir} is read-only, so the report cannot be written "
        "there: pass --print to print it, or --output_dir=DIR to write "
        "report.md, results.csv and plots/ into DIR.\n")
    sys.exit(1)
  status = report.completeness(workdir, report.read_rows(workdir))
  logging.info("%s", report.status_note(status).replace("**", ""))
  logging.info("Report: %s", path or f"printed only ({workdir} is read-only; "
               "nothing written)")
  if FLAGS.print:
    print(text, end="")


def run():
  """Console-script entry point (`robustjax-report`)."""
  app.run(main, flags_parser=launch_common.parse_flags)


if __name__ == "__main__":
  run()
