r"""Runs a config's sweep: `launch/sweep.py --config=FILE.py --workdir=DIR`.

The config file defines `sweep(add)` (and optionally `metrics()`) next to
`get_config`; each point trains in `DIR/<point>/` and `DIR/sweep.jsonl`
records its status. Rerunning the command skips finished points. With
`config.sweep.vmap` (or `--vmap`), points that differ only in seed and
`compress.init_sparsity` train as one vmapped program. Example:

  python launch/sweep.py --config=configs/digits_sweep.py --workdir=/tmp/dsw
"""

import importlib.util
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from launch import common as launch_common
from robustjax.study import sweep as sweep_lib

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file with sweep().",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Sweep folder (one subfolder a point).")
flags.DEFINE_bool("vmap", None, "Override config.sweep.vmap.")
flags.DEFINE_integer("max_models", None, "Override config.sweep.max_models.")
flags.mark_flags_as_required(["config", "workdir"])


def _config_module(path: str):
  """Imports the config file itself, to reach its sweep() and metrics()."""
  path = path.split(":", 1)[0]  # Drop the `:args` part.
  spec = importlib.util.spec_from_file_location("sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "sweep"):
    raise app.UsageError(f"{path} defines no sweep(add) function.")
  return module


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = launch_common.setup(FLAGS.workdir)
  module = _config_module(config_flags.get_config_filename(FLAGS["config"]))
  vmap = FLAGS.vmap if FLAGS.vmap is not None else config.sweep.vmap
  max_models = FLAGS.max_models or config.sweep.max_models
  headline = module.metrics() if hasattr(module, "metrics") else ()
  with launch_common.fatal_errors(FLAGS.workdir):
    sweep_lib.run_sweep(config, FLAGS.workdir, module.sweep, vmap=vmap,
                        max_models=max_models, headline=headline)
  logging.info("Sweep done: %s", os.path.join(FLAGS.workdir,
                                              sweep_lib.SWEEP_FILE))


def run():
  """Console-script entry point (`robustjax-sweep`)."""
  app.run(main, flags_parser=launch_common.parse_flags)


if __name__ == "__main__":
  app.run(main, flags_parser=launch_common.parse_flags)
