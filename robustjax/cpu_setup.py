"""CPU host set-up: XLA CPU devices, XLA:CPU flags and the allocator.

What the launchers do to a CPU-only process before JAX starts, and the one
per-program option of large train steps:

- `restart_with_cpu_malloc`: restart the launcher once under an allocator
  that reuses XLA:CPU's large per-call buffers (`cpu_malloc_environ`).
- `configure_host_devices`: one XLA CPU device per core (with one device,
  XLA:CPU leaves cores idle), training on `train_devices` of them
  (`parallel.train_mesh`), and `CPU_XLA_FLAGS` / `CPU_ONLY_XLA_FLAGS`.
- `train_step_compiler_options`: YNNPACK elementwise fusions for a train
  step with large activations.

No setting here reaches a process that may run on a GPU or TPU
(`platform_info.platform_hint`, decided before JAX starts): an
accelerator's XLA reads `XLA_FLAGS` too and stops at start-up on a flag it
does not know. The settings move speed, memory and float rounding, never
what is computed. Why each is on: docs/cpu_performance.md, "CPU settings:
why each is on".
"""

import functools
import importlib.metadata
import os
import platform
import sys
from typing import Dict, Optional, Tuple

from absl import logging
import jax
import numpy as np

from robustjax import parallel
from robustjax import platform_info

# XLA:CPU flags set by `configure_host_devices` in a CPU-only process unless
# XLA_FLAGS already sets the same flag. XLA:CPU hands the kernel-gradient
# convolutions of a training step (window = the whole feature map) to
# YNNPACK, which runs them much slower than XLA's own Eigen convolution.
CPU_XLA_FLAGS = (
    "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)
# Added under the same condition: the flag is not CPU-specific, and on a
# GPU it would lower the optimisation of the generated kernels. LLVM
# optimisation level 1 for XLA:CPU's generated code (fusions; convolutions
# and matrix products are library calls either way) shortens compiles with
# no slower steps; it moves float rounding.
CPU_ONLY_XLA_FLAGS = ("--xla_backend_optimization_level=1",)
_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"

# A per-program XLA:CPU option for training steps with large activations
# (`train_step_compiler_options`). XLA:CPU fuses each BatchNorm / ReLU /
# residual chain into every consumer instead of storing it once, so the
# transposes that feed the kernel-gradient convolutions re-compute it, up
# to a whole stage deep (`lax.optimization_barrier` does not stop it:
# XLA:CPU drops the barriers while optimising). With YNNPACK's elementwise
# fusions the chains are computed once. Small steps are slower with them
# and evaluation / attack programs gain nothing, hence a per-program option
# above a size threshold rather than a process flag. The list is XLA's
# default YNNPACK fusion types without INDIVIDUAL_CONVOLUTION (as
# `CPU_XLA_FLAGS`) and with ELTWISE.
_YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"
_YNN_ELTWISE_TYPES = ("LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
                      "LIBRARY_FUSION_TYPE_REDUCE",
                      "LIBRARY_FUSION_TYPE_ELTWISE")
# Elements of the largest activation per device from which the option is
# used: the measured crossover lies between 2^19 and 2^20.
ELTWISE_FUSION_MIN_ELEMENTS = 1 << 20

# The glibc tunable of `huge_pages_environ`. XLA:CPU allocates every
# program's temporary buffer and its large outputs afresh on each call.
# glibc maps an allocation that large anew and unmaps it when freed, so
# each call page-faults fresh 4 KiB pages, which the kernel zeroes first.
# With this tunable (glibc >= 2.35) malloc asks for transparent huge pages
# (`madvise(MADV_HUGEPAGE)`) on those mappings, and few faults remain.
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
_THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"

# The allocator a CPU process restarts with by default (`cpu_malloc_environ`,
# `--cpu_malloc`). mimalloc (PyPI `cmeel-mimalloc`, a dependency on Linux)
# keeps freed memory in per-thread pools and hands it out again, so a
# call's buffers are neither mapped nor zeroed anew: purging off (freed
# pages stay committed) and huge OS pages allowed. It costs more peak
# resident memory than glibc with huge pages.
MIMALLOC_DISTRIBUTION = "cmeel-mimalloc"
MIMALLOC_OPTIONS = (("MIMALLOC_PURGE_DELAY", "-1"),
                    ("MIMALLOC_ALLOW_LARGE_OS_PAGES", "1"))
# `cpu_malloc_environ` choices: mimalloc (falls back to glibc_huge_pages
# where it is not installed), glibc with huge pages (`huge_pages_environ`),
# or the process's allocator untouched.
CPU_MALLOCS = ("mimalloc", "glibc_huge_pages", "system")


def _backends_initialized() -> bool:
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  return xla_bridge.backends_are_initialized()


def _usable_cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # Not on Linux.
    return os.cpu_count() or 1


def _thp_mode(path: str = _THP_ENABLED) -> str:
  """The kernel's transparent huge page mode ("always", "madvise", "never")."""
  try:
    with open(path) as f:
      text = f.read()
  except OSError:
    return ""
  modes = [m[1:-1] for m in text.split() if m.startswith("[")]
  return modes[0] if modes else ""


def huge_pages_environ(environ: Optional[Dict[str, str]] = None,
                       thp_mode: Optional[str] = None
                       ) -> Optional[Dict[str, str]]:
  """The environment to restart a CPU process with, for huge-page buffers.

  glibc's tunable `glibc.malloc.hugetlb=1` (glibc >= 2.35) makes malloc ask
  for transparent huge pages on the large mappings XLA:CPU allocates anew
  on every call, instead of faulting them in 4 KiB at a time
  (`HUGE_PAGES_TUNABLE`). Tunables are read when a process starts, hence a
  restart (`restart_with_cpu_malloc`, `--cpu_malloc=glibc_huge_pages`).

  Args:
    environ: the current environment (default `os.environ`).
    thp_mode: the kernel's THP mode; default: read from sysfs.

  Returns:
    A copy of `environ` with the tunable added to `GLIBC_TUNABLES`, or None
    where it would change nothing or is not wanted: not Linux with glibc
    >= 2.35, THP not in `madvise` mode (`always` already gives huge pages,
    `never` none), a `glibc.malloc.hugetlb` setting already there (the
    user's choice), or a process that may use an accelerator
    (`platform_info.cpu_only_process()` is False).
  """
  environ = dict(os.environ if environ is None else environ)
  if not sys.platform.startswith("linux"):
    return None
  libc, version = platform.libc_ver()
  try:
    major_minor = tuple(int(v) for v in version.split(".")[:2])
  except ValueError:
    return None
  if libc != "glibc" or major_minor < (2, 35):
    return None
  if (thp_mode if thp_mode is not None else _thp_mode()) != "madvise":
    return None
  tunables = environ.get("GLIBC_TUNABLES", "")
  if ("glibc.malloc.hugetlb" in tunables
      or not platform_info.cpu_only_process()):
    return None
  environ["GLIBC_TUNABLES"] = ":".join(
      t for t in (tunables, HUGE_PAGES_TUNABLE) if t)
  return environ


def mimalloc_library() -> Optional[str]:
  """The path of the installed mimalloc shared library, or None."""
  try:
    files = importlib.metadata.files(MIMALLOC_DISTRIBUTION) or ()
  except importlib.metadata.PackageNotFoundError:
    return None
  names = sorted((f for f in files if f.name.startswith("libmimalloc.so")),
                 key=lambda f: len(f.name))
  for f in names:
    path = os.path.abspath(str(f.locate()))
    if os.path.isfile(path):
      return path
  return None


def cpu_malloc_environ(malloc: str = "mimalloc",
                       environ: Optional[Dict[str, str]] = None,
                       thp_mode: Optional[str] = None
                       ) -> Optional[Dict[str, str]]:
  """The environment to restart a CPU process with, for a faster allocator.

  XLA:CPU allocates each program's temporary buffer and its large outputs
  anew on every call; glibc's malloc maps allocations that large afresh and
  unmaps them when freed, so each call page-faults its buffers in again,
  zeroed. The allocator is chosen when a process starts (`LD_PRELOAD`,
  `GLIBC_TUNABLES`), hence a restart (`restart_with_cpu_malloc`).

  Args:
    malloc: one of `CPU_MALLOCS`. "mimalloc": preload mimalloc with
      `MIMALLOC_OPTIONS` (options you set yourself win); where it is not
      installed, as "glibc_huge_pages". "glibc_huge_pages":
      `huge_pages_environ`. "system": no change.
    environ: the current environment (default `os.environ`).
    thp_mode: the kernel's THP mode (for the glibc fallback); default: sysfs.

  Returns:
    A copy of `environ` to restart with, or None where nothing is to change:
    "system", not Linux, a process that may use an accelerator
    (`platform_info.cpu_only_process()` is False), an `LD_PRELOAD` that
    already names an allocator (ours after the restart, or your own
    jemalloc / tcmalloc), or, for glibc, whatever `huge_pages_environ`
    rules out.

  Raises:
    ValueError: `malloc` is not one of `CPU_MALLOCS`.
  """
  if malloc not in CPU_MALLOCS:
    raise ValueError(f"Unknown CPU allocator {malloc!r}; use one of "
                     f"{', '.join(CPU_MALLOCS)}.")
  environ = dict(os.environ if environ is None else environ)
  if (malloc == "system" or not sys.platform.startswith("linux")
      or not platform_info.cpu_only_process()):
    return None
  preload = environ.get("LD_PRELOAD", "")
  if "malloc" in preload:  # jemalloc, tcmalloc, mimalloc: already chosen.
    return None
  library = mimalloc_library() if malloc == "mimalloc" else None
  if library is None:
    return huge_pages_environ(environ, thp_mode)
  environ["LD_PRELOAD"] = ":".join(p for p in (library, preload) if p)
  for name, value in MIMALLOC_OPTIONS:
    environ.setdefault(name, value)
  return environ


def restart_with_cpu_malloc(malloc: str, scripts_dir: str) -> None:
  """Restarts this process under `cpu_malloc_environ(malloc)`, if any.

  Call it first thing in a launcher: `os.execve` replaces the process
  (same interpreter and command line), so this returns only where nothing
  is to change. Only a process whose main program is a script in
  `scripts_dir` (the launchers) or a `robustjax-*` console script
  restarts, never a test runner or notebook that imported a launcher.

  Args:
    malloc: one of `CPU_MALLOCS` (`--cpu_malloc`).
    scripts_dir: the folder of the launcher scripts.
  """
  main_file = getattr(sys.modules.get("__main__"), "__file__", "") or ""
  if (os.path.dirname(os.path.abspath(main_file)) != os.path.abspath(
      scripts_dir) and not os.path.basename(main_file).startswith(
          "robustjax-")):
    return
  environ = cpu_malloc_environ(malloc)
  if environ is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, environ)


def _library_mapped(stem: str, maps: str = "/proc/self/maps"
                    ) -> Optional[bool]:
  """Whether a library `stem`.* is mapped in this process (None: unknown)."""
  try:
    with open(maps) as f:
      return f"/{stem}." in f.read()
  except OSError:
    return None


def cpu_malloc_in_use(environ: Optional[Dict[str, str]] = None,
                      maps: str = "/proc/self/maps") -> str:
  """The allocator a process started with `environ` uses, in words.

  E.g. "mimalloc 3.4.3 (MIMALLOC_PURGE_DELAY=-1 ...)", "glibc
  (GLIBC_TUNABLES=glibc.malloc.hugetlb=1)" or "glibc". It moves speed and
  memory, never numbers (logged by the launchers, recorded in a study's
  environment.json). For this process (`environ` None) a preload that the
  dynamic loader could not load (it only warns) is reported as such.

  Args:
    environ: the environment; default this process's.
    maps: this process's memory map (Linux), to see the preload loaded.
  """
  own = environ is None
  environ = os.environ if own else environ
  tunables = environ.get("GLIBC_TUNABLES", "")
  glibc = f"glibc (GLIBC_TUNABLES={tunables})" if tunables else "glibc"
  preload = [p for p in environ.get("LD_PRELOAD", "").replace(" ", ":")
             .split(":") if "malloc" in os.path.basename(p)]
  if not preload:
    return glibc
  stem = os.path.basename(preload[0]).split(".")[0]
  if own and _library_mapped(stem, maps) is False:
    return f"{glibc}; {preload[0]} in LD_PRELOAD did not load"
  name = stem.removeprefix("lib")
  if name == "mimalloc":
    try:
      name += " " + importlib.metadata.version(MIMALLOC_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
      pass
  options = " ".join(f"{k}={v}" for k, v in sorted(environ.items())
                     if k.startswith(stem.removeprefix("lib").upper() + "_"))
  return f"{name} ({options})" if options else name


def configure_host_devices(num_devices: Optional[int] = None,
                           max_devices: int = 8,
                           train_devices: Optional[int] = 1) -> int:
  """Before JAX starts: one XLA CPU device per core, and faster XLA:CPU flags.

  With one CPU device, XLA:CPU leaves cores idle; with one device per core
  and the batch sharded over them (what the trainer and evaluators do with
  every local device) the cores are full. Also appends `CPU_XLA_FLAGS` and
  `CPU_ONLY_XLA_FLAGS` to `XLA_FLAGS` when
  `platform_info.cpu_only_process()`: in a process that may run on a GPU or
  TPU no XLA:CPU flag is set, since the accelerator's XLA reads `XLA_FLAGS`
  too and stops at start-up on a flag it does not know. The device count
  only affects the CPU backend: on a GPU or TPU host the accelerator
  devices stay the default and their programs are unchanged.

  Training uses `train_devices` of them (`parallel.train_mesh()`; default
  one): a train step on one device of several runs as fast as in a
  one-device process, while a step over all of them all-reduces its
  gradients through XLA:CPU's in-process collectives, which can abort a
  run on a loaded machine. Evaluation and attacks, which need no
  collectives, use every device (`parallel.make_mesh()`).

  A choice the user made is kept: with `--xla_force_host_platform_device_count`
  in `XLA_FLAGS`, or `jax_num_cpu_devices` already set, the device count is
  left alone (and training uses every device); a flag of `CPU_XLA_FLAGS` or
  `CPU_ONLY_XLA_FLAGS` already in `XLA_FLAGS` is not added.

  Args:
    num_devices: CPU devices to create; default: the usable cores, rounded
      down to a power of two (so power-of-two batch sizes divide) and capped
      at `max_devices` (small per-device batches are slow).
    max_devices: the cap for the default.
    train_devices: CPU devices of `parallel.train_mesh()`; None: all.

  Returns:
    The number of CPU devices configured, or 0 if nothing was changed
    (already configured by the user, or JAX's backends were already
    initialised: then a warning says to call this earlier).
  """
  if _backends_initialized():
    if len(jax.devices("cpu")) > 1 or _usable_cores() == 1:
      return 0  # Configured already (or nothing to gain).
    logging.warning(
        "configure_host_devices() was called after JAX initialised its "
        "backends; CPU devices (%d) and XLA flags are unchanged. Call it "
        "before any JAX computation (right after the imports).",
        len(jax.devices("cpu")))
    return 0
  xla_flags = os.environ.get("XLA_FLAGS", "")
  wanted = (CPU_XLA_FLAGS + CPU_ONLY_XLA_FLAGS
            if platform_info.cpu_only_process() else ())
  new_flags = [f for f in wanted if f.split("=")[0] not in xla_flags]
  if new_flags:
    os.environ["XLA_FLAGS"] = " ".join([xla_flags] + new_flags).strip()
  if (_DEVICE_COUNT_FLAG in xla_flags
      or jax.config.jax_num_cpu_devices >= 0):
    return 0
  if num_devices is None:
    cores = max(1, min(_usable_cores(), max_devices))
    num_devices = 1 << (cores.bit_length() - 1)
  jax.config.update("jax_num_cpu_devices", int(num_devices))
  parallel.limit_cpu_train_devices(None if train_devices is None else max(
      1, min(int(train_devices), int(num_devices))))
  return int(num_devices)


@functools.lru_cache(maxsize=None)
def _compiler_options_accepted(options: Tuple[Tuple[str, str], ...]) -> bool:
  """Whether this jaxlib's CPU compiler takes `options` (a tiny program)."""
  try:
    jax.jit(lambda x: x * 2.0 + 1.0, compiler_options=dict(options)).lower(
        np.zeros(4, np.float32)).compile()
    return True
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("XLA:CPU does not take the compiler options %s (%s); "
                    "train steps compile without them.", dict(options), e)
    return False


def train_step_compiler_options(activation_elements: Optional[int],
                                platform: Optional[str] = None
                                ) -> Optional[Dict[str, str]]:
  """XLA compiler options for a train step, or None for XLA's defaults.

  On XLA:CPU, in a process set up by `configure_host_devices` (its YNNPACK
  flag in `XLA_FLAGS`, not a user's own setting), a train step whose
  largest activation has at least `ELTWISE_FUSION_MIN_ELEMENTS` elements
  per device is compiled with YNNPACK's elementwise fusions (see
  `_YNN_ELTWISE_TYPES`). The result moves by float rounding only (a few
  ulp per elementwise op, as accurate as XLA's own).

  Args:
    activation_elements: elements of the step's largest activation on one
      device (e.g. per-device batch x height x width x channels of the
      first stage), or None if unknown (then None).
    platform: the train mesh's platform; default: JAX's default backend.

  Returns:
    A dict for `jax.jit(..., compiler_options=...)`, or None.
  """
  if activation_elements is None or (
      activation_elements < ELTWISE_FUSION_MIN_ELEMENTS):
    return None
  if (platform or jax.default_backend()) != "cpu":
    return None
  if CPU_XLA_FLAGS[0] not in os.environ.get("XLA_FLAGS", "").split():
    return None  # Not configured by us, or the user chose their own types.
  options = ((_YNN_OPTION, ",".join(_YNN_ELTWISE_TYPES)),)
  return dict(options) if _compiler_options_accepted(options) else None
