"""The platform a process runs on, and the arithmetic its models compute in.

`platform_hint` decides the platform before JAX starts its backends (XLA
reads `XLA_FLAGS` when they start), so `cpu_setup` can keep every CPU-only
setting away from a GPU or TPU process; `precision_info` is what a study
records in its environment.json.
"""

import importlib.metadata
import importlib.util
import os
from typing import Dict, Optional

import jax

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
