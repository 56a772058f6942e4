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

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from launch import common as launch_common
from robustjax.study import runner

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Compression config file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for the compressed models.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = launch_common.setup(FLAGS.workdir)
  with launch_common.fatal_errors(FLAGS.workdir):
    rows = runner.run_study(config, FLAGS.workdir,
                            shifts=("clean", "domain"))
  for r in rows:
    logging.info("%-55s s%-4d %9.1f KiB  sparsity %5.1f%%  %s %s %.2f%%",
                 r["model_id"], r["seed"], r["size_bits"] / 8192,
                 100 * r["sparsity"], r["shift"], r["name"],
                 100 * r["accuracy"])
  logging.info("Done: %s", os.path.join(FLAGS.workdir, "report.md"))


def run():
  """Console-script entry point (`robustjax-compress`)."""
  app.run(main, flags_parser=launch_common.parse_flags)


if __name__ == "__main__":
  run()
