"""Test-session set-up shared by every test of the suite.

* The repository root goes on `sys.path`, so `robustjax`, `configs` and
  `launch` import without installing anything.
* `TFDS_DATA_DIR` points at a fresh temporary folder for the whole session
  (removed at exit): tests never read or write ~/tensorflow_datasets, and the
  embedded `digits` data are built there once, on first use, then shared by
  every test and by the launcher subprocesses (which inherit the variable).
* JAX's persistent compilation cache lives in the same temporary folder.
  The suite runs in two pytest-xdist worker processes (`-n 2` in the README
  command and .ci/run); each has its own session folder, data and cache.
  On a CPU most of a tiny training run is XLA compilation (~10 s for
  ResNet-8's init + train step + eval); the many short runs of the tests
  compile the same programs, so with the cache each one after the first
  costs ~1 s. Results are unchanged (an entry is the same executable).
* absl flags count as parsed (absltest's `create_tempdir` works under
  pytest; its folders go into the session folder too).
* tfds progress bars and INFO logs are turned off.
"""

import atexit
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

SESSION_DIR = tempfile.mkdtemp(prefix="robustjax_tests_")
atexit.register(shutil.rmtree, SESSION_DIR, ignore_errors=True)
DATA_DIR = os.path.join(SESSION_DIR, "tfds")
os.environ["TFDS_DATA_DIR"] = DATA_DIR
# A cache folder the user set is kept (and then shared by the workers); the
# default one is per process. Under pytest-xdist the workers inherit the
# controller's environment, and JAX's cache writes entries non-atomically (a
# worker could read another's half-written file), so each worker gets its own
# folder: the marker says the variable was set here, not by the user.
if (os.environ.get("_ROBUSTJAX_TESTS_DEFAULT_CACHE")
    or "JAX_COMPILATION_CACHE_DIR" not in os.environ):
  os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(SESSION_DIR,
                                                         "jax_cache")
  os.environ["_ROBUSTJAX_TESTS_DEFAULT_CACHE"] = "1"
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["TEST_TMPDIR"] = os.path.join(SESSION_DIR, "absltest")

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
from absl import logging
import jax
import tensorflow_datasets as tfds

# In case jax was imported (and read its environment) before this file.
jax.config.update("jax_compilation_cache_dir",
                  os.environ["JAX_COMPILATION_CACHE_DIR"])
_MIN_SECS = os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(_MIN_SECS))
# absltest reads flags (e.g. --test_tmpdir for create_tempdir) that pytest
# never parses: use their defaults.
flags.FLAGS.mark_as_parsed()
tfds.disable_progress_bar()
logging.set_verbosity(logging.WARNING)
