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

from absl import logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from launch import common as launch_common
from robustjax import io
from robustjax.study import runner

launch_common.define_flags("Study config file.",
                          "Output directory (resumable).")


def study(config, workdir: str) -> None:
  runner.run_study(config, workdir)
  logging.info("Done. Report: %s", os.path.join(workdir, "report.md"))
  print(io.read_text(os.path.join(workdir, "report.md")))


# `python launch/study.py` and the console script `robustjax-study`.
run = launch_common.entry_point(study)

if __name__ == "__main__":
  run()
