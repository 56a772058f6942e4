r"""Re-renders a study's report: `python launch/report.py --workdir=DIR`.

Rewrites `DIR/report.md`, `DIR/results.csv` and `DIR/plots/*.png` from the
rows in `DIR/results.jsonl` (robustjax.study.report.render). Works while the
study is still running or after it was interrupted: the report then says
"Partial: N of M cells". Training is not touched; no accelerator is needed.

  python launch/report.py --workdir=workdirs/default
"""

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
flags.DEFINE_string("workdir", None, "Study workdir (holds results.jsonl).")
flags.DEFINE_bool("print", False, "Also print report.md to stdout.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  try:
    path = report.render(FLAGS.workdir)
  except FileNotFoundError as e:
    sys.stderr.write(f"FATAL {e}\n")
    sys.exit(1)
  rows = report.read_rows(FLAGS.workdir)
  status = report.completeness(FLAGS.workdir, rows)
  logging.info("%s", report.status_note(status).replace("**", ""))
  logging.info("Report: %s", path)
  if FLAGS.print:
    print(io.read_text(path))


def run():
  """Console-script entry point (`robustjax-report`)."""
  app.run(main, flags_parser=launch_common.parse_flags)


if __name__ == "__main__":
  run()
