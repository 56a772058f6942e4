"""Shared launcher set-up: logging, multi-host init, device report."""

import logging as std_logging
import os

from absl import flags
from absl import logging
import jax

flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() (multi-host TPU VM / "
                  "multi-node GPU; coordinator from the environment).")


class _QuietLibraries(std_logging.Filter):
  """Drops INFO chatter of Orbax / TensorStore / tfds from the run log."""

  def filter(self, record):
    if record.levelno > std_logging.INFO:
      return True
    return not any(s in record.pathname for s in _QUIET)


_QUIET = ("/orbax/", "/tensorstore/", "/tensorflow_datasets/", "/etils/")


def setup():
  """Initialises multi-host JAX if asked and logs the devices."""
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  if flags.FLAGS.distributed or os.environ.get("ROBUSTJAX_DISTRIBUTED"):
    jax.distributed.initialize()
  logging.info("JAX %s: process %d/%d, %d local / %d global devices (%s).",
               jax.__version__, jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count(),
               jax.devices()[0].device_kind)
