"""Device mesh and sharding helpers (jax.sharding; no pmap).

The suite is data-parallel: one mesh axis `data` spans every device of every
process; batches are sharded along it and parameters are replicated. The same
code runs on 1 CPU, 8 simulated CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`), a GPU host or a TPU
pod slice.

On a CPU, XLA keeps only ~1.4 of 2 cores busy with one device; one XLA CPU
device per core with the batch split over them fills the cores
(`configure_host_devices()`, what the launchers call by default).
Evaluation and attacks (no collectives: every example is independent) then
run on every device, attacks under `per_example` (`jax.shard_map`); training
runs on `train_mesh()`, which `configure_host_devices` limits to one CPU
device by default: a data-parallel train step all-reduces its gradients,
and XLA:CPU's in-process all-reduce once aborted a run on a loaded machine
(BUILD.md, "CPU speed"). A program on one device of a two-device process
runs as fast as in a one-device process, so training loses nothing.
"""

import functools
import importlib.metadata
import importlib.util
import os
import platform
import sys
from typing import Dict, Optional, Sequence, Tuple

from absl import logging
import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

DATA_AXIS = "data"

# XLA:CPU flags set by `configure_host_devices` unless XLA_FLAGS already sets
# the same flag. XLA:CPU hands the kernel-gradient convolutions of a
# training step (window = the whole feature map) to YNNPACK, which runs them
# ~4x slower than XLA's own Eigen convolution; turning YNNPACK convolutions
# off made a ResNet-20 train step 1.5x faster (benchmarks/train_results.md).
# Set only when the process can only run on the CPU (`cpu_only_process`: no
# accelerator plugin installed, or JAX_PLATFORMS=cpu): a GPU / TPU plugin's
# XLA parses XLA_FLAGS as well and stops at start-up on a flag it does not
# know.
CPU_XLA_FLAGS = (
    "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)
# Added under the same condition: the flag is not CPU-specific, and on a
# GPU it would lower the optimisation of the generated kernels. LLVM
# optimisation level 1 for XLA:CPU's generated code (fusions; convolutions
# and matrix products are library calls either way) cut the default
# study's trace + compile from 109 s to 81 s with no slower steps; it moves
# float rounding, which grows over a training run
# (benchmarks/compile_results.md).
CPU_ONLY_XLA_FLAGS = ("--xla_backend_optimization_level=1",)
_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"

# A per-program XLA:CPU option for training steps with large activations
# (`train_step_compiler_options`). XLA:CPU fuses each BatchNorm / ReLU /
# residual chain into every consumer instead of storing it once, so the
# transposes that feed the kernel-gradient convolutions re-compute it, up
# to a whole stage deep, and ran ~half of a ResNet-20 step at 32x32x3 /
# batch 128 (`lax.optimization_barrier` did not stop it: XLA:CPU drops the
# barriers while optimising and still fused the chains behind them). With
# YNNPACK's elementwise fusions the chains are
# computed once: that step ran 1.29x faster, while at the digits shape
# (16x16, batch 64, 1/8 of the elements) steps were 8-15 % slower and
# evaluation / attack programs gained nothing, hence a per-program option
# above a size threshold rather than a process flag
# (benchmarks/train_results.md, 2026-12-01 evening). The list is XLA's
# default YNNPACK fusion types (jaxlib 0.10.2) without
# INDIVIDUAL_CONVOLUTION (as `CPU_XLA_FLAGS`) and with ELTWISE.
_YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"
_YNN_ELTWISE_TYPES = ("LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
                      "LIBRARY_FUSION_TYPE_REDUCE",
                      "LIBRARY_FUSION_TYPE_ELTWISE")
# Elements of the largest activation per device from which the option is
# used: measured crossover between 2^19 (ResNet-20, 32x32, batch 32: 0.97x)
# and 2^20 (16x16, batch 256: 1.06x; 32x32, batch 128 = 2^21: 1.29x).
ELTWISE_FUSION_MIN_ELEMENTS = 1 << 20

# The glibc tunable of `huge_pages_environ`. XLA:CPU allocates every
# program's temporary buffer (~500 MB for a ResNet-20 train step at 32x32x3
# / batch 128) and its large outputs afresh on each call. glibc maps an
# allocation that large anew (from a worker thread's arena: anything over
# its 64 MB heaps) and unmaps it when freed, so each step page-faulted
# ~123k fresh 4 KiB pages, which the kernel zeroes first: ~30 % of the
# process's CPU time (`perf record`, 2026-12-02, benchmarks/train_results.md).
# With this tunable (glibc >= 2.35) malloc asks for transparent huge pages
# (`madvise(MADV_HUGEPAGE)`) on those mappings: ~650 faults per step.
# (mallopt settings that keep the memory in one arena's heap removed the
# faults too, but the one arena slowed compiles and multi-threaded steps.)
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
_THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"

# The allocator a CPU process restarts with by default (`cpu_malloc_environ`,
# `--cpu_malloc`). Huge pages (above) cut the faults of glibc's fresh
# mappings, but every call still maps, zeroes and unmaps its buffers again.
# mimalloc (PyPI `cmeel-mimalloc`, a dependency on Linux) keeps freed memory
# in per-thread pools and hands it out again: with purging off (freed pages
# stay committed: the next call reuses them without a fault) and huge OS
# pages allowed, the ResNet-20 train step at 32x32x3 / batch 128 ran
# 1.3-1.4x faster than with glibc's huge pages, at ~1.6x the peak resident
# memory; a purge delay of 100 or 1000 ms (mimalloc's default is 10) lost
# most of the gain, and jemalloc (not on PyPI) was slower than glibc
# (benchmarks/train_results.md, 2026-12-02 afternoon).
MIMALLOC_DISTRIBUTION = "cmeel-mimalloc"
MIMALLOC_OPTIONS = (("MIMALLOC_PURGE_DELAY", "-1"),
                    ("MIMALLOC_ALLOW_LARGE_OS_PAGES", "1"))
# `cpu_malloc_environ` choices: mimalloc (falls back to glibc_huge_pages
# where it is not installed), glibc with huge pages (`huge_pages_environ`),
# or the process's allocator untouched.
CPU_MALLOCS = ("mimalloc", "glibc_huge_pages", "system")

# CPU devices `train_mesh()` uses in a one-process CPU run; None: all. Set
# by `configure_host_devices` (only when it created the devices itself).
_cpu_train_devices: Optional[int] = None


def _backends_initialized() -> bool:
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  return xla_bridge.backends_are_initialized()


def _usable_cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # Not on Linux.
    return os.cpu_count() or 1


# Accelerator plugin modules, by the platform they bring (`platform_hint`).
_ACCELERATOR_MODULES = (("tpu", "libtpu"), ("gpu", "jax_cuda13_plugin"),
                        ("gpu", "jax_cuda12_plugin"),
                        ("gpu", "jax_rocm7_plugin"),
                        ("gpu", "jax_rocm6_plugin"))
# `JAX_PLATFORMS` names and the platform they stand for.
_PLATFORM_NAMES = {"cpu": "cpu", "cuda": "gpu", "rocm": "gpu", "gpu": "gpu",
                   "tpu": "tpu"}


def platform_hint(platforms: Optional[str] = None) -> str:
  """The platform JAX will run this process on: "cpu", "gpu" or "tpu".

  Decided without starting JAX's backends (XLA reads `XLA_FLAGS` when they
  start, so the flags must be chosen first): where `JAX_PLATFORMS` (or the
  `jax_platforms` config) names platforms, the first one that is not the
  CPU ("cpu" where it names only the CPU); without one, "tpu" where
  `libtpu` is installed, "gpu" where a CUDA / ROCm plugin is, another
  accelerator plugin (a `jax_plugins` package or entry point) as "gpu",
  else "cpu". A process with an accelerator plugin but no accelerator
  falls back to the CPU at run time; it is still reported as the
  accelerator, so that no CPU-only setting reaches a real one.

  Args:
    platforms: a `JAX_PLATFORMS` value; default: the `jax_platforms`
      config, else the environment variable.
  """
  if platforms is None:
    platforms = (jax.config.jax_platforms
                 or os.environ.get("JAX_PLATFORMS", ""))
  names = [p.strip().lower() for p in platforms.split(",") if p.strip()]
  if names:
    accelerators = [n for n in names if n != "cpu"]
    if not accelerators:
      return "cpu"
    return _PLATFORM_NAMES.get(accelerators[0], accelerators[0])
  for name, module in _ACCELERATOR_MODULES:
    if importlib.util.find_spec(module) is not None:
      return name
  if importlib.util.find_spec("jax_plugins") is not None:
    return "gpu"
  if importlib.metadata.entry_points(group="jax_plugins"):
    return "gpu"
  return "cpu"


def cpu_only_process() -> bool:
  """Whether this process can only get CPU devices from JAX.

  True when `platform_hint()` is "cpu": `JAX_PLATFORMS` (or `jax_platforms`)
  names only `cpu`, or, without it, no accelerator plugin is installed (no
  `libtpu`, no CUDA / ROCm plugin, no `jax_plugins` package or entry
  point). Safe to call before JAX starts.
  """
  return platform_hint() == "cpu"


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

  XLA:CPU allocates each program's temporary buffer and large outputs anew
  on every call, and glibc maps allocations that large afresh, so every
  call page-faults them in again, 4 KiB at a time (a ResNet-20 train step
  at 32x32x3 / batch 128: ~123k faults, ~30 % of its CPU time). glibc's
  tunable `glibc.malloc.hugetlb=1` (glibc >= 2.35) makes malloc ask for
  transparent huge pages on those mappings (~650 faults per step). Tunables
  are read when a process starts, so the launchers restart themselves once
  with this environment (`launch/common.py`, `--cpu_huge_pages`).

  Args:
    environ: the current environment (default `os.environ`).
    thp_mode: the kernel's THP mode; default: read from sysfs.

  Returns:
    A copy of `environ` with the tunable added to `GLIBC_TUNABLES`, or None
    where it would change nothing or is not wanted: not Linux with glibc
    >= 2.35, THP not in `madvise` mode (`always` already gives huge pages,
    `never` none), a `glibc.malloc.hugetlb` setting already there (the
    user's choice), or a process that may use an accelerator
    (`cpu_only_process()` is False).
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
  if "glibc.malloc.hugetlb" in tunables or not cpu_only_process():
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

  XLA:CPU allocates each program's temporary buffer (~500 MB for a ResNet-20
  train step at 32x32x3 / batch 128) and its large outputs anew on every
  call. glibc's malloc maps allocations that large afresh and unmaps them
  when freed, so each call page-faulted its buffers in again, 4 KiB at a
  time, zeroed (~30 % of that step's CPU time). The allocator is chosen
  when a process starts (`LD_PRELOAD`, `GLIBC_TUNABLES`), so the launchers
  restart themselves once with this environment (`launch/common.py`,
  `--cpu_malloc`).

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
    (`cpu_only_process()` is False), an `LD_PRELOAD` that already names an
    allocator (ours after the restart, or your own jemalloc / tcmalloc),
    or, for glibc, whatever `huge_pages_environ` rules out.

  Raises:
    ValueError: `malloc` is not one of `CPU_MALLOCS`.
  """
  if malloc not in CPU_MALLOCS:
    raise ValueError(f"Unknown CPU allocator {malloc!r}; use one of "
                     f"{', '.join(CPU_MALLOCS)}.")
  environ = dict(os.environ if environ is None else environ)
  if (malloc == "system" or not sys.platform.startswith("linux")
      or not cpu_only_process()):
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

  With one CPU device, XLA:CPU keeps about 1.4 of 2 cores busy; with one
  device per core and the batch sharded over them (what the trainer and
  evaluators do with every local device) the cores are full: PGD-10 ~1.5x
  (idle 2-core machine), and with `CPU_XLA_FLAGS` a ResNet-20 train step
  1.7-1.8x faster (benchmarks/*_results.md).
  Also appends `CPU_XLA_FLAGS` and `CPU_ONLY_XLA_FLAGS` to `XLA_FLAGS` when
  `cpu_only_process()`: in a process that may run on a GPU or TPU
  (`platform_hint()`) no XLA:CPU flag is set, since the accelerator's XLA
  reads `XLA_FLAGS` too and stops at start-up on a flag it does not know.
  The device count only affects the CPU backend: on a GPU or TPU host the
  accelerator devices stay the default and their programs are unchanged.

  Training uses `train_devices` of them (`train_mesh()`; default one): on
  the idle 2-core machine a train step on one of two devices ran as fast as
  in a one-device process (benchmarks/compile_results.md), while a step
  over both all-reduces its gradients through XLA:CPU's in-process
  collectives, which aborted a run once under load. Evaluation and attacks,
  which need no collectives, use every device (`make_mesh()`).

  A choice the user made is kept: with `--xla_force_host_platform_device_count`
  in `XLA_FLAGS`, or `jax_num_cpu_devices` already set, the device count is
  left alone (and training uses every device); a flag of `CPU_XLA_FLAGS` or
  `CPU_ONLY_XLA_FLAGS` already in `XLA_FLAGS` is not added.

  Args:
    num_devices: CPU devices to create; default: the usable cores, rounded
      down to a power of two (so power-of-two batch sizes divide) and capped
      at `max_devices` (per-device batches below ~32 images are slow).
    max_devices: the cap for the default.
    train_devices: CPU devices of `train_mesh()`; None: all of them.

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
  # The XLA of a GPU / TPU plugin parses XLA_FLAGS too, and one that does
  # not know an XLA:CPU flag stops at start-up: CPU flags only for the CPU.
  wanted = (CPU_XLA_FLAGS + CPU_ONLY_XLA_FLAGS if cpu_only_process() else ())
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
  global _cpu_train_devices
  _cpu_train_devices = None if train_devices is None else max(
      1, min(int(train_devices), int(num_devices)))
  return int(num_devices)


# What float32 matrix products and convolutions compute in, by platform and
# `jax_default_matmul_precision` (None: the backend's default). XLA:CPU
# computes float32 whatever the setting; a GPU's default is TF32 (on NVIDIA
# Ampere or newer, which have TF32 units), a TPU's one bfloat16 pass.
_MATMUL_PRECISION_ALIASES = {
    None: "default", "default": "default", "fastest": "default",
    "bfloat16": "default", "high": "high", "tensorfloat32": "high",
    "bfloat16_3x": "high", "highest": "highest", "float32": "highest"}
_FLOAT32_MATMULS = {
    "gpu": {"default": "tf32", "high": "tf32", "highest": "f32"},
    "tpu": {"default": "bf16", "high": "bf16_3x", "highest": "f32"},
}


def precision_info(half_precision: Optional[bool] = None,
                   platform_name: Optional[str] = None) -> Dict[str, object]:
  """The arithmetic a process's models compute in (for environment.json).

  Args:
    half_precision: the config's `model.half_precision` (models built in
      bfloat16), or None where unknown (not recorded then).
    platform_name: "cpu", "gpu" or "tpu"; default: this process's first
      device (starts JAX's backends).

  Returns:
    "platform" and "device_kind" (None where `platform_name` is given),
    "matmul_precision" (`jax_default_matmul_precision`, "default" where
    unset: the backend's default), "float32_matmuls" (what a float32
    matrix product or convolution computes in there: "f32", "tf32", "bf16",
    "bf16_3x", or the setting itself where not known) and, where given,
    "half_precision" and "precision": "bf16" for bfloat16 models, else
    "float32_matmuls".
  """
  kind = None
  if platform_name is None:
    device = jax.devices()[0]
    platform_name, kind = device.platform, device.device_kind
  setting = jax.config.jax_default_matmul_precision
  level = _MATMUL_PRECISION_ALIASES.get(
      setting.lower() if isinstance(setting, str) else setting)
  if platform_name == "cpu":
    matmuls = "f32"
  elif level is None:
    matmuls = str(setting)
  else:
    matmuls = _FLOAT32_MATMULS.get(platform_name, {}).get(level, level)
  info = {"platform": platform_name, "device_kind": kind,
          "matmul_precision": setting or "default",
          "float32_matmuls": matmuls}
  if half_precision is not None:
    info["half_precision"] = bool(half_precision)
    info["precision"] = "bf16" if half_precision else matmuls
  return info


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
  `_YNN_ELTWISE_TYPES`): 1.29x faster for a ResNet-20 at 32x32x3 / batch
  128. The result moves by float rounding only (a few ulp per elementwise
  op, as accurate as XLA's own: benchmarks/train_results.md).

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


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over all (or the given) devices, axis name `data`."""
  devices = np.asarray(devices if devices is not None else jax.devices())
  return Mesh(devices.reshape(-1), (DATA_AXIS,))


def train_mesh() -> Mesh:
  """The trainer's mesh: every device, except as `configure_host_devices` set.

  In a one-process CPU run set up by `configure_host_devices` (the
  launchers), the first `train_devices` CPU devices (default one), so a
  train step needs no all-reduce; everywhere else (GPU, TPU, several
  processes, a device count the user chose) the same as `make_mesh()`.
  """
  devices = jax.devices()
  if (_cpu_train_devices is not None and jax.process_count() == 1
      and devices[0].platform == "cpu"):
    devices = devices[:_cpu_train_devices]
  return make_mesh(devices)


def per_example(fn, mesh: Mesh, num_replicated: int, out_axis=0,
                batch_axes: Optional[Sequence[int]] = None):
  """`fn` run on each device's examples of a batch, with no communication.

  For a computation that is independent per example (attacks, inference):
  `fn(*replicated, *batched)` where the first `num_replicated` arguments
  (pytrees) are replicated and the rest are sharded along their example
  axis (`batch_axes`, one per batched argument; default: the leading
  axis); the output's example axis `out_axis` (an int, or a tuple with one
  per output) is sharded the same way. Each device runs `fn` on its slice,
  exactly as a one-device program at the per-device batch would, so XLA's
  sharding propagation cannot turn a batch-merging reshape (e.g. a vmap
  folded into a convolution's batch) into all-gathers.
  """
  spec = lambda axis: P(*([None] * axis), DATA_AXIS)
  out_specs = (tuple(map(spec, out_axis)) if isinstance(out_axis, tuple)
               else spec(out_axis))

  def wrapped(*args):
    axes = batch_axes or (0,) * (len(args) - num_replicated)
    specs = (P(),) * num_replicated + tuple(map(spec, axes))
    return jax.shard_map(fn, mesh=mesh, in_specs=specs,
                         out_specs=out_specs)(*args)
  return wrapped


def barrier(name: str) -> None:
  """Waits until every process gets here (no-op in a one-process run)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "batch_size"):
  """Raises a clear error if the global batch does not split over devices."""
  n = mesh.devices.size
  if batch_size % n:
    raise ValueError(
        f"{what}={batch_size} does not divide by the {n} devices of the mesh; "
        f"use a multiple of {n} (e.g. {max(n, batch_size // n * n)}).")


def shard_batch(mesh: Mesh, *arrays):
  """Puts host arrays (this process's part of the global batch) on the mesh.

  Each array's leading axis is split over the `data` axis; with several
  processes, each passes its own slice and the result is one global array.
  """
  sharding = batch_sharded(mesh)
  out = tuple(jax.make_array_from_process_local_data(sharding, np.asarray(a))
              for a in arrays)
  return out if len(out) > 1 else out[0]


def shard_global_batch(mesh: Mesh, *arrays):
  """Like `shard_batch`, for a global batch that every process holds whole.

  Each process contributes only its contiguous slice (evaluation loops read
  the same batches on every process).
  """
  n, count = len(arrays[0]), jax.process_count()
  if n % count:
    raise ValueError(f"Batch of {n} does not split over {count} processes.")
  i, per = jax.process_index(), n // count
  return shard_batch(mesh, *(np.asarray(a)[i * per:(i + 1) * per]
                             for a in arrays))


def replicate(mesh: Mesh, tree):
  """Places a pytree replicated on every device of the mesh."""
  return jax.device_put(tree, replicated(mesh))


def is_main_process() -> bool:
  """Only process 0 writes metrics, results and checkpoint metadata."""
  return jax.process_index() == 0
