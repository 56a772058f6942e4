r"""Trains a model: `python launch/train.py --config=FILE.py[:args] --workdir=DIR`.

Re-running the same command resumes from the newest checkpoint in DIR.
Example:

  python launch/train.py --config=configs/digits_resnet.py --workdir=/tmp/dig
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
from robustjax import train
from robustjax.compress import recipes

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = launch_common.setup(FLAGS.workdir)
  with launch_common.fatal_errors(FLAGS.workdir):
    train.train_and_evaluate(config, FLAGS.workdir,
                             recipes.from_config(config))
  logging.info("Done: results in %s", FLAGS.workdir)


def run():
  """Console-script entry point (`robustjax-train`)."""
  app.run(main, flags_parser=launch_common.parse_flags)


if __name__ == "__main__":
  run()
