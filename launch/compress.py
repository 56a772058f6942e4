r"""Compresses a trained model: `python launch/compress.py --config=FILE.py[:args] --workdir=DIR`.

Runs every pruning, distillation and quantization setting of
`config.compress` (robustjax.compress.methods.compress_all): each compressed
model goes into its own subfolder of DIR with its variables and
`compression.json`, and `DIR/compressed.json` lists them all (method,
setting, path, size in bits, sparsity, accuracy). The base model is
`config.compress.base_workdir`, or trained in DIR/base if that is empty.
Rerunning the same command skips finished models and resumes an interrupted
fine-tuning. Example:

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
from robustjax import parallel
from robustjax import progress
from robustjax.compress import methods

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Compression config file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for the compressed models.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  launch_common.setup()
  if parallel.is_main_process():
    progress.log_to_file(FLAGS.workdir)
  entries = methods.compress_all(FLAGS.config, FLAGS.workdir)
  for e in entries:
    acc = ", ".join(f"{k} {v:.2%}" for k, v in e["accuracy"].items())
    logging.info("%-45s %9.1f KiB  x%6.2f  sparsity %5.1f%%  %s", e["name"],
                 e["size_bytes"] / 1024, e["compression_ratio"],
                 100 * e["sparsity"], acc)
  logging.info("Done: manifest %s", os.path.join(FLAGS.workdir,
                                                 methods.MANIFEST))


def run():
  """Console-script entry point (`robustjax-compress`)."""
  app.run(main, flags_parser=launch_common.parse_flags)


if __name__ == "__main__":
  run()
