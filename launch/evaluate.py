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

from absl import logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from launch import common as launch_common
from robustjax.study import runner

launch_common.define_flags("The model's config file.",
                          'Training workdir or compressed model.')


def evaluate(config, workdir: str) -> None:
  rows = runner.evaluate_saved(config, workdir)
  for r in rows:
    level = "" if r["level"] is None else f" @ {r['level']}"
    print(f"{r['shift']:12s} {r['name']:18s}{level:10s} "
          f"{100 * r['accuracy']:6.2f}%  (n={r['n']})")
  logging.info("%d rows.", len(rows))


# `python launch/evaluate.py` and the console script `robustjax-evaluate`.
run = launch_common.entry_point(evaluate)

if __name__ == "__main__":
  run()
