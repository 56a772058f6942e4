"""Platform-dependent set-up: CPU-only settings, precision, compile cache.

XLA:CPU flags and the CPU allocator restart must not reach a GPU / TPU
process (an accelerator's XLA reads `XLA_FLAGS` too and stops at start-up
on a flag it does not know); the platform is faked by patching
`platform_info.platform_hint`, which decides it before JAX starts its
backends.
Also: the precision recorded in a study's environment.json, and the local
compilation cache folder of a run whose workdir is in a bucket.
"""

import os
import sys
import types
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jax
import ml_collections

from robustjax import cpu_setup
from robustjax import parallel
from robustjax import platform_info

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "launch")


class PlatformHintTest(parameterized.TestCase):
  """`platform_info.platform_hint` (no backend started)."""

  @parameterized.parameters(
      ("cpu", "cpu"), ("cuda", "gpu"), ("cuda,cpu", "gpu"),
      ("cpu,cuda", "gpu"), ("rocm", "gpu"), ("tpu", "tpu"),
      ("tpu,cpu", "tpu"), (" CPU ", "cpu"))
  def test_from_jax_platforms(self, platforms, expected):
    self.assertEqual(platform_info.platform_hint(platforms), expected)

  @parameterized.parameters(
      ("libtpu", "tpu"), ("jax_cuda13_plugin", "gpu"),
      ("jax_cuda12_plugin", "gpu"), ("jax_plugins", "gpu"), (None, "cpu"))
  def test_from_installed_plugins(self, installed, expected):
    find_spec = lambda name: object() if name == installed else None
    with mock.patch("importlib.util.find_spec", side_effect=find_spec), \
        mock.patch("importlib.metadata.entry_points", return_value=()):
      self.assertEqual(platform_info.platform_hint(""), expected)

  def test_cpu_only_process_follows_the_hint(self):
    for hint, cpu_only in (("cpu", True), ("gpu", False), ("tpu", False)):
      with mock.patch.object(platform_info, "platform_hint",
                             return_value=hint):
        self.assertEqual(platform_info.cpu_only_process(), cpu_only, hint)


class CpuSettingsByPlatformTest(parameterized.TestCase):
  """No XLA:CPU flag and no allocator restart unless the platform is CPU."""

  def _configure(self, hint, xla_flags=""):
    """`configure_host_devices(2)` as before JAX starts, on `hint`."""
    saved = parallel._cpu_train_devices  # pylint: disable=protected-access
    self.addCleanup(setattr, parallel, "_cpu_train_devices", saved)
    with mock.patch.object(platform_info, "platform_hint",
                           return_value=hint), \
        mock.patch.object(cpu_setup, "_backends_initialized",
                          return_value=False), \
        mock.patch.object(jax.config, "update") as update, \
        mock.patch.dict(os.environ, {"XLA_FLAGS": xla_flags}):
      devices = cpu_setup.configure_host_devices(2)
      return devices, os.environ["XLA_FLAGS"], update

  @parameterized.parameters("gpu", "tpu")
  def test_no_cpu_flag_on_an_accelerator(self, hint):
    _, flags, _ = self._configure(hint)
    self.assertEqual(flags, "")
    _, flags, _ = self._configure(hint, "--xla_dump_to=/tmp/d")
    self.assertEqual(flags, "--xla_dump_to=/tmp/d")

  def test_cpu_flags_on_the_cpu(self):
    devices, flags, update = self._configure("cpu")
    if jax.config.jax_num_cpu_devices < 0:  # Not set by the test process.
      self.assertEqual(devices, 2)
      update.assert_called_once_with("jax_num_cpu_devices", 2)
    self.assertEqual(
        flags.split(),
        list(cpu_setup.CPU_XLA_FLAGS + cpu_setup.CPU_ONLY_XLA_FLAGS))

  def _restart(self, hint, malloc, main_file, environ=None):
    """`restart_with_cpu_malloc` on `hint`, as in `main_file`: the execve."""
    main = types.ModuleType("__main__")
    main.__file__ = main_file
    environ = dict(os.environ if environ is None else environ)
    with mock.patch.object(platform_info, "platform_hint",
                           return_value=hint), \
        mock.patch.dict(sys.modules, {"__main__": main}), \
        mock.patch.dict(os.environ, environ, clear=True), \
        mock.patch.object(os, "execve") as execve:
      cpu_setup.restart_with_cpu_malloc(malloc, LAUNCH)
    return execve

  @parameterized.parameters("gpu", "tpu")
  def test_no_allocator_restart_on_an_accelerator(self, hint):
    study = os.path.join(LAUNCH, "study.py")
    for malloc in cpu_setup.CPU_MALLOCS:
      with mock.patch.object(platform_info, "platform_hint",
                             return_value=hint):
        self.assertIsNone(cpu_setup.cpu_malloc_environ(malloc, {}), malloc)
      self._restart(hint, malloc, study).assert_not_called()

  def test_allocator_restart_on_the_cpu(self):
    if (not sys.platform.startswith("linux")
        or cpu_setup.mimalloc_library() is None):
      self.skipTest("mimalloc restarts a CPU launcher on Linux only")
    environ = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    execve = self._restart("cpu", "mimalloc", os.path.join(LAUNCH, "study.py"),
                           environ)
    execve.assert_called_once()
    self.assertIn(cpu_setup.mimalloc_library(),
                  execve.call_args[0][2]["LD_PRELOAD"])
    # Only a launcher restarts: not a test runner that imported one.
    self._restart("cpu", "mimalloc", os.path.join(ROOT, "tests", "x.py"),
                  environ).assert_not_called()
    self._restart("cpu", "system", os.path.join(LAUNCH, "study.py"),
                  environ).assert_not_called()


class PrecisionTest(parameterized.TestCase):
  """`platform_info.precision_info` and the study's environment.json."""

  @parameterized.parameters(
      ("cpu", None, "f32"), ("cpu", "bfloat16", "f32"),
      ("gpu", None, "tf32"), ("gpu", "tensorfloat32", "tf32"),
      ("gpu", "highest", "f32"), ("gpu", "float32", "f32"),
      ("tpu", None, "bf16"), ("tpu", "high", "bf16_3x"),
      ("tpu", "highest", "f32"))
  def test_float32_matmuls(self, platform, setting, expected):
    with jax.default_matmul_precision(setting):
      info = platform_info.precision_info(False, platform)
    self.assertEqual(info["float32_matmuls"], expected)
    self.assertEqual(info["precision"], expected)
    self.assertEqual(info["matmul_precision"], setting or "default")
    self.assertEqual(info["platform"], platform)

  def test_half_precision_models(self):
    info = platform_info.precision_info(True, "gpu")
    self.assertEqual((info["half_precision"], info["precision"]),
                     (True, "bf16"))
    self.assertNotIn("precision", platform_info.precision_info(None, "gpu"))

  def test_environment_records_the_precision(self):
    from robustjax.study import runner  # pylint: disable=g-import-not-at-top
    config = ml_collections.ConfigDict(
        {"model": {"half_precision": True}})
    env = runner.environment(config)
    device = jax.devices()[0]
    self.assertEqual(env["platform"], device.platform)
    self.assertEqual(env["device_kind"], device.device_kind)
    self.assertEqual(env["matmul_precision"],
                     jax.config.jax_default_matmul_precision or "default")
    self.assertTrue(env["half_precision"])
    self.assertEqual(env["precision"], "bf16")
    config.model.half_precision = False
    env = runner.environment(config)
    self.assertEqual(env["precision"], env["float32_matmuls"])
    self.assertNotIn("half_precision", runner.environment())
    self.assertIn("xla_flags", runner.environment())


class CompilationCacheDirTest(absltest.TestCase):
  """`launch/common.compilation_cache_dir` (`--compilation_cache_dir`)."""

  def test_local_workdir_keeps_its_own_cache(self):
    from launch import common  # pylint: disable=g-import-not-at-top
    self.assertEqual(common.compilation_cache_dir("runs/a", "", {}),
                     os.path.join(os.path.abspath("runs/a"), "jax_cache"))
    self.assertIsNone(common.compilation_cache_dir("", "", {}))

  def test_bucket_workdir_caches_locally(self):
    from launch import common  # pylint: disable=g-import-not-at-top
    default = common.compilation_cache_dir("gs://b/runs/a", "", {})
    self.assertEqual(default, os.path.join(
        os.path.expanduser("~"), ".cache", "robustjax", "jax_cache"))
    self.assertEqual(
        common.compilation_cache_dir("gs://b/runs/a", "/tmp/c", {}),
        "/tmp/c")
    self.assertEqual(
        common.compilation_cache_dir("gs://b/runs/a", "~/c", {}),
        os.path.join(os.path.expanduser("~"), "c"))

  def test_choice_none_and_environment(self):
    from launch import common  # pylint: disable=g-import-not-at-top
    self.assertIsNone(common.compilation_cache_dir("runs/a", "none", {}))
    self.assertIsNone(common.compilation_cache_dir(
        "gs://b/a", "/tmp/c", {"JAX_COMPILATION_CACHE_DIR": "/x"}))
    with self.assertRaisesRegex(ValueError, "use a local folder"):
      common.compilation_cache_dir("gs://b/a", "gs://b/cache", {})


if __name__ == "__main__":
  absltest.main()
