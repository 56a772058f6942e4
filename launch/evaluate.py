r"""Evaluates a trained or compressed model on the shifts of `config.evals`.

  python launch/evaluate.py --config=configs/digits_resnet.py --workdir=DIR \
      "--config.evals.corruptions.names=('gaussian_noise','fog')" \
      "--config.evals.attacks.names=('pgd_linf',)" \
      "--config.evals.attacks.eps=(0.0,0.05,0.1)"

(Tuple fields take Python tuple syntax on the command line.)

DIR is a training workdir (its newest checkpoint is evaluated) or a
compressed-model folder written by launch/compress.py or a study
(`compression.json`). Rows go to `DIR/eval_results.jsonl` (journal:
`DIR/eval_journal.jsonl`);
re-running skips cells already there.
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
config_flags.DEFINE_config_file("config", None, "The model's config file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Training workdir or compressed model.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = launch_common.setup(FLAGS.workdir)
  with launch_common.fatal_errors(FLAGS.workdir):
    rows = runner.evaluate_saved(config, FLAGS.workdir)
  for r in rows:
    level = "" if r["level"] is None else f" @ {r['level']}"
    print(f"{r['shift']:12s} {r['name']:18s}{level:10s} "
          f"{100 * r['accuracy']:6.2f}%  (n={r['n']})")
  logging.info("%d rows.", len(rows))


def run():
  """Console-script entry point (`robustjax-evaluate`)."""
  app.run(main, flags_parser=launch_common.parse_flags)


if __name__ == "__main__":
  run()
