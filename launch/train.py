r"""Trains a model: `python launch/train.py --config=FILE.py[:args] --workdir=DIR`.

Re-running the same command resumes from the newest checkpoint in DIR.
Example:

  python launch/train.py --config=configs/digits_resnet.py --workdir=/tmp/dig
"""

import os
import sys

from absl import logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from launch import common as launch_common
from robustjax import train as train_lib
from robustjax.compress import recipes

launch_common.define_flags("Experiment config file.",
                          "Directory for checkpoints and metrics.")


def train(config, workdir: str) -> None:
  train_lib.train_and_evaluate(config, workdir, recipes.from_config(config))
  logging.info("Done: results in %s", workdir)


# `python launch/train.py` and the console script `robustjax-train`.
run = launch_common.entry_point(train)

if __name__ == "__main__":
  run()
