r"""Builds every model of a config's grid: `python launch/compress.py --config=F --workdir=DIR`.

Trains the originals of `config.study.archs`, then prunes, distils and
quantizes them as `config.study` and `config.compress` say (the same grid
and settings as launch/study.py; robustjax/study/grid.py), saving each model
in `DIR/models/<model_id>__s<seed>/` (`variables/` + `compression.json`:
method, setting, size in bits, sparsity). Each is scored on the clean test
split and the target domains (`DIR/results.jsonl`, `results.csv`,
`report.md`); launch/study.py on the same DIR adds the other shifts without
rebuilding any model. Rerunning skips finished models and cells and resumes
an interrupted fine-tuning. Example:

  python launch/compress.py --config=configs/digits_compress.py --workdir=/tmp/dcmp
"""

import os
import sys

from absl import logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from launch import common as launch_common
from robustjax.study import runner

launch_common.define_flags("Compression config file.",
                          "Directory for the compressed models.")


def compress(config, workdir: str) -> None:
  rows = runner.run_study(config, workdir, shifts=("clean", "domain"))
  for r in rows:
    logging.info("%-55s s%-4d %9.1f KiB  sparsity %5.1f%%  %s %s %.2f%%",
                 r["model_id"], r["seed"], r["size_bits"] / 8192,
                 100 * r["sparsity"], r["shift"], r["name"],
                 100 * r["accuracy"])
  logging.info("Done: %s", os.path.join(workdir, "report.md"))


# `python launch/compress.py` and the console script `robustjax-compress`.
run = launch_common.entry_point(compress)

if __name__ == "__main__":
  run()
