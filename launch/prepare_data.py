r"""Prepares a dataset for the suite: `--dataset=NAME --data_dir=DIR`.

Builds the dataset in ArrayRecord format (or converts a TFRecord copy that
is already there, in place and without downloading), then counts every split
against the published sizes. Examples:

  python launch/prepare_data.py --dataset=office31 --data_dir=/data/tfds \
      --manual_dir=/data/office31
  python launch/prepare_data.py --dataset=cifar10 --data_dir=/data/tfds
  python launch/prepare_data.py --dataset=cifar10_corrupted \
      --data_dir=/data/tfds --domains=gaussian_noise_5,frosted_glass_blur_5

With --distributed (multi-host), process 0 prepares a shared data dir while
the others wait. See BUILD.md, "Datasets".
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from launch import common as launch_common
from robustjax.data import prepare

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", None, "Registered dataset: digits, cifar10, "
                    "cifar10_corrupted, domainnet, office31.")
flags.DEFINE_string("data_dir", None, "tfds data dir (default "
                    "$TFDS_DATA_DIR or ~/tensorflow_datasets).")
flags.DEFINE_string("manual_dir", None, "Folder holding a manual download "
                    "(Office-31; default DATA_DIR/downloads/manual/NAME).")
flags.DEFINE_list("domains", None, "Only these domains (default: all).")
flags.DEFINE_bool("overwrite", False, "Delete what is prepared for these "
                  "domains and build it again.")
flags.mark_flags_as_required(["dataset"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  launch_common.setup()
  counts = prepare.prepare(FLAGS.dataset, data_dir=FLAGS.data_dir,
                           manual_dir=FLAGS.manual_dir, domains=FLAGS.domains,
                           overwrite=FLAGS.overwrite)
  for domain, splits in counts.items():
    logging.info("%s/%s: %s", FLAGS.dataset, domain, ", ".join(
        f"{split} {n:,}" for split, n in splits.items()))
  logging.info("Done: %s is ready (%d domains, %s examples).", FLAGS.dataset,
               len(counts), f"{sum(sum(s.values()) for s in counts.values()):,}")


if __name__ == "__main__":
  app.run(main, flags_parser=launch_common.parse_flags)
