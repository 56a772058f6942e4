r"""Runs a robustness study: `python launch/study.py --config=F --workdir=DIR`.

Trains the originals, compresses them, evaluates every model on every shift
and writes `DIR/results.jsonl`, `results.csv`, `report.md` and `plots/`.
Re-running the same command after an interruption finishes the grid without
redoing finished cells. SIGTERM or SIGINT (a preemption, Ctrl-C) ends it
with one line saying how many cells are saved (exit status 143 or 130); a
training under way is checkpointed and resumes mid-way on the rerun.

  python launch/study.py --config=configs/default.py --workdir=workdirs/default
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from launch import common as launch_common
from robustjax import io
from robustjax.study import runner

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Study config file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Output directory (resumable).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = launch_common.setup(FLAGS.workdir)
  with launch_common.fatal_errors(FLAGS.workdir):
    runner.run_study(config, FLAGS.workdir)
  logging.info("Done. Report: %s", os.path.join(FLAGS.workdir, "report.md"))
  print(io.read_text(os.path.join(FLAGS.workdir, "report.md")))


def run():
  """Console-script entry point (`robustjax-study`)."""
  app.run(main, flags_parser=launch_common.parse_flags)


if __name__ == "__main__":
  run()
