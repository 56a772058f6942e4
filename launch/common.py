"""Shared launcher set-up: logging, multi-host init, device report, the
workdir's lock, one FATAL sentence for the errors a user must act on, and
one line for a run stopped by SIGTERM / SIGINT."""

import contextlib
import os
import sys
from typing import Callable, Mapping, Optional

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags

from configs import validation as config_validation
from robustjax import checkpoint
from robustjax import cpu_setup
from robustjax import io
from robustjax import lock
from robustjax import preemption
from robustjax import progress
from robustjax.study import config_checks

# The persistent compilation cache of a run whose workdir is not a local
# folder (a gs:// bucket): one local folder per user, shared by all runs
# (JAX keys each entry by the program, its compile options and the jaxlib /
# device it was compiled for).
DEFAULT_COMPILATION_CACHE_DIR = os.path.join("~", ".cache", "robustjax",
                                             "jax_cache")

flags.DEFINE_integer(
    "cpu_devices", -1,
    "XLA CPU devices for this process; the faster XLA:CPU flags of "
    "robustjax.cpu_setup.configure_host_devices are set in every case "
    "(unless XLA_FLAGS sets them) where the process can only run on the CPU "
    "(none where JAX_PLATFORMS or an installed GPU / TPU plugin names an "
    "accelerator). -1 (default): one per core (up to 8, a power of "
    "two); evaluation and attacks split their batches over them, training "
    "uses --cpu_train_devices of them. 1: one device, as JAX does. 0: JAX's "
    "defaults untouched (no flags either). N: N devices. A device count in "
    "XLA_FLAGS wins (and then training uses every device). GPU/TPU runs are "
    "unaffected. Why: docs/cpu_performance.md.")
flags.DEFINE_integer(
    "cpu_train_devices", 1,
    "Of those CPU devices, how many a training step uses (default 1: no "
    "all-reduce through XLA:CPU's in-process collectives, which can abort a "
    "run on a loaded machine). -1: all of them.")
flags.DEFINE_enum(
    "cpu_malloc", "mimalloc", cpu_setup.CPU_MALLOCS,
    "In a CPU-only process on Linux, restart the launcher once with a memory "
    "allocator that does not page-fault XLA:CPU's large per-call buffers in "
    "afresh on every call (robustjax.cpu_setup.cpu_malloc_environ). "
    "mimalloc: preloaded, freed memory kept for reuse (faster than "
    "glibc_huge_pages, at more peak memory); falls back to "
    "glibc_huge_pages where mimalloc is not installed. glibc_huge_pages: "
    "glibc with GLIBC_TUNABLES=glibc.malloc.hugetlb=1. system: no restart. "
    "An allocator in your own LD_PRELOAD wins.")
flags.DEFINE_string(
    "compilation_cache_dir", "",
    "A local folder for JAX's persistent compilation cache (a rerun or "
    "resume skips XLA compiles). Default: WORKDIR/jax_cache for a local "
    "workdir, and for a bucket workdir (gs://...) the local folder "
    f"{DEFAULT_COMPILATION_CACHE_DIR}. JAX_COMPILATION_CACHE_DIR wins. "
    "'none': no persistent cache.")
flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() (multi-host TPU VM / "
                  "multi-node GPU; coordinator from the environment).")


def _fatal(message: str) -> None:
  sys.stderr.write(f"FATAL {' '.join(message.split())}\n")
  sys.exit(1)


@contextlib.contextmanager
def fatal_errors(workdir: str = ""):
  """Ends the launcher with one FATAL sentence (exit status 1) when another
  run holds the workdir, the storage refuses a file (disk full, read-only,
  no permission) or saved state is damaged; other errors keep their
  traceback. A run stopped by SIGTERM or SIGINT (`preemption.Preempted`)
  ends with its one line and exit status 128 + the signal's number (143,
  130).

  Args:
    workdir: the run's folder, named as what is kept when the library did
      not say more.
  """
  try:
    yield
  except preemption.Preempted as e:
    sys.stderr.write(f"{' '.join(e.message.split())}\n")
    sys.exit(e.exit_code)
  except (lock.WorkdirLockedError, io.StorageError,
          checkpoint.DamagedCheckpointError) as e:
    _fatal(str(e))
  except Exception as e:  # pylint: disable=broad-except
    error = io.storage_os_error(e)
    if error is None:
      raise
    _fatal(io.describe_storage_error(
        error, f"what was saved before is kept in {workdir or 'the workdir'}"))


def _launcher_name() -> str:
  """`study` for launch/study.py or the robustjax-study console script."""
  name = os.path.basename(sys.argv[0] if sys.argv else "")
  return name.removesuffix(".py").removeprefix("robustjax-") or "launcher"


def load_config():
  """`--config`, resolved once and validated: its values on their own
  (configs/validation.py), then its names by the library's registries
  (robustjax.study.config_checks).

  A missing or broken config file, or a bad value, ends the run with one
  sentence naming the problem (exit status 1) before any work starts.
  """
  if "config" not in flags.FLAGS:  # A launcher without --config.
    return None
  config = flags.FLAGS.config
  if not isinstance(config, ml_collections.ConfigDict):
    path = config_flags.get_config_filename(flags.FLAGS["config"])
    if not os.path.exists(path):
      _fatal(f"--config={path}: no such config file. Pass an existing file, "
             "e.g. --config=configs/default.py (see configs/).")
    _fatal(f"--config={path}: the file could not be loaded as a config "
           "(it must define get_config(arg=None) returning a ConfigDict).")
  try:
    return config_checks.check_config(config_validation.validate(config))
  except ValueError as e:
    _fatal(f"Config error: {e}")


def compilation_cache_dir(workdir: str, choice: str = "",
                          environ: Optional[Mapping[str, str]] = None
                          ) -> Optional[str]:
  """The local folder for JAX's persistent compilation cache, or None.

  JAX writes its cache with plain file operations, so a bucket workdir
  (gs://...) cannot hold it; such a run caches in a local folder instead.

  Args:
    workdir: the run's folder ("" for a launcher without one).
    choice: `--compilation_cache_dir`: a local folder ("~" expanded),
      "none" for no persistent cache, or "" for the default: WORKDIR/jax_cache
      for a local workdir, else `DEFAULT_COMPILATION_CACHE_DIR`.
    environ: the environment (default `os.environ`).

  Returns:
    The absolute folder, or None where nothing is to be set:
    `JAX_COMPILATION_CACHE_DIR` set (JAX reads it itself), "none", or no
    workdir and no folder chosen.
  """
  environ = os.environ if environ is None else environ
  if environ.get("JAX_COMPILATION_CACHE_DIR") or choice == "none":
    return None
  if choice:
    if not io.is_local(choice):
      raise ValueError(
          f"--compilation_cache_dir={choice}: use a local folder (JAX "
          "writes its cache with plain file operations).")
    return os.path.abspath(os.path.expanduser(choice))
  if not workdir:
    return None
  if io.is_local(workdir):
    return os.path.join(os.path.abspath(workdir), "jax_cache")
  return os.path.abspath(os.path.expanduser(DEFAULT_COMPILATION_CACHE_DIR))


def setup(workdir: str = ""):
  """Logging, multi-host init and the resolved config of a launcher.

  Args:
    workdir: the run's folder, which this process then holds (robustjax.lock:
      another process holding it ends this one with one FATAL sentence);
      its log goes to `workdir/log.txt` too.

  Returns:
    The validated `--config`.
  """
  # Before any work: once more under a faster allocator, on a CPU.
  cpu_setup.restart_with_cpu_malloc(flags.FLAGS.cpu_malloc,
                                    os.path.dirname(os.path.abspath(__file__)))
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(progress.QuietLibraries())
  config = load_config()
  # Before anything starts JAX's backends: one CPU device per core.
  if flags.FLAGS.cpu_devices != 0:
    cpu_setup.configure_host_devices(
        None if flags.FLAGS.cpu_devices < 0 else flags.FLAGS.cpu_devices,
        train_devices=(None if flags.FLAGS.cpu_train_devices < 0 else
                       flags.FLAGS.cpu_train_devices))
  if flags.FLAGS.distributed or os.environ.get("ROBUSTJAX_DISTRIBUTED"):
    jax.distributed.initialize()
  if workdir:
    # One writer per workdir: a second run stops here, before it logs into
    # the first one's log.txt (the library functions hold the same lock).
    with fatal_errors(workdir):
      lock.acquire(workdir, _launcher_name())
  if workdir and jax.process_index() == 0:
    progress.log_to_file(workdir)
  try:
    cache_dir = compilation_cache_dir(workdir,
                                      flags.FLAGS.compilation_cache_dir)
  except ValueError as e:
    _fatal(str(e))
  if cache_dir:
    # Persistent compilation cache: a rerun or resume skips XLA compiles.
    jax.config.update("jax_compilation_cache_dir", cache_dir)
  logging.info("JAX %s: process %d/%d, %d local / %d global devices (%s); "
               "malloc: %s.",
               jax.__version__, jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count(),
               jax.devices()[0].device_kind, cpu_setup.cpu_malloc_in_use())
  return config


def _unknown_field(argv, error: Exception) -> Optional[str]:
  """The message for a `--config.<field>` override the config lacks, or None.

  ml_collections raises `KeyError("'field'\\nDid you mean ...?")` for it,
  wrapped in an AttributeError for a nested field.
  """
  while error.args and isinstance(error.args[0], BaseException):
    error = error.args[0]
  field, *hint = str(error.args[0] if error.args else "").splitlines()
  field = field.strip("\"'")
  overrides = [a.lstrip("-").split("=")[0] for a in argv[1:]
               if a.startswith(("-config.", "--config."))]
  bad = [o for o in overrides if field in o.split(".")[1:]]
  if not bad:
    return None
  return (f"--{bad[0]}: the config has no field {field!r}. "
          f"{' '.join(line.strip() for line in hint)} Overrides must name "
          "an existing field, e.g. --config.model.width=8; see the config "
          "file and configs/common.py (get_base_config) for all fields.")


def define_flags(config_help: str, workdir_help: str) -> None:
  """The two flags of a launcher: `--config` (a locked config file, with
  `file.py:args` and `--config.<field>=` overrides) and `--workdir`."""
  config_flags.DEFINE_config_file("config", None, config_help,
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, workdir_help)
  flags.mark_flags_as_required(["config", "workdir"])


def entry_point(work: Callable[[ml_collections.ConfigDict, str], None]
                ) -> Callable[[], None]:
  """The `run()` of a launcher whose job is `work(config, workdir)`.

  `run()` parses the flags (`parse_flags`), sets the process up (`setup`:
  logging, CPU devices, the config, the workdir's lock) and calls `work`
  under `fatal_errors` (a known failure ends in one FATAL sentence); it is
  both the script's `__main__` and its console-script entry point.
  """

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = setup(flags.FLAGS.workdir)
    with fatal_errors(flags.FLAGS.workdir):
      work(config, flags.FLAGS.workdir)

  return lambda: app.run(main, flags_parser=parse_flags)


def parse_flags(argv):
  """`app.run` flags parser: absl's, plus a clear error for a bad override.

  ml_collections reports `--config.<field>=...` for a field the config does
  not have as a bare AttributeError/KeyError traceback; this reports it like
  any other flag error (one line, exit status 1).

  Args:
    argv: the command line, program name first.

  Returns:
    The arguments left after parsing, program name first.
  """
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    message = str(e)
  except (AttributeError, KeyError) as e:
    message = _unknown_field(argv, e)
    if message is None:
      raise
  sys.stderr.write(f"FATAL Flags parsing error: {' '.join(message.split())}\n"
                   "Pass --helpshort or --helpfull to see help on flags.\n")
  sys.exit(1)
