"""CPU host set-up: XLA CPU devices, XLA:CPU flags, the allocator restart.

`robustjax.cpu_setup`. XLA fixes the number of CPU devices and reads
`XLA_FLAGS` and the allocator when a process starts, so most cases run a
small probe in a fresh interpreter; the settings must move speed, memory
and float rounding only, never the numbers beyond that.

  python -m pytest tests/cpu_setup_test.py
"""

import json
import os
import platform
import subprocess
import sys
from unittest import mock

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from robustjax import cpu_setup
from robustjax import models
from robustjax import platform_info

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# What configure_host_devices() did in a fresh interpreter: device count,
# XLA_FLAGS, return values of a first and a second call.
_CONFIGURE_PROBE = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
from robustjax import cpu_setup
from robustjax import parallel
kwargs = json.loads(sys.argv[2])
first = cpu_setup.configure_host_devices(**kwargs)
import jax
import jax.numpy as jnp
jnp.zeros(2).block_until_ready()
second = cpu_setup.configure_host_devices(**kwargs)
print(json.dumps(dict(first=first, second=second,
                      devices=len(jax.devices()),
                      train_devices=parallel.train_mesh().devices.size,
                      mesh_devices=parallel.make_mesh().devices.size,
                      platform=jax.devices()[0].platform,
                      xla_flags=os.environ.get("XLA_FLAGS", ""))))
"""


def _configure_probe(xla_flags=None, platforms="cpu", **kwargs):
  env = dict(os.environ, JAX_PLATFORMS=platforms)
  env.pop("XLA_FLAGS", None)
  if xla_flags is not None:
    env["XLA_FLAGS"] = xla_flags
  out = subprocess.run(
      [sys.executable, "-c", _CONFIGURE_PROBE, REPO, json.dumps(kwargs)],
      env=env, cwd=REPO, capture_output=True, text=True, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


# Logits, parameter and input gradients of a small ResNet on a batch sharded
# over every device, with or without configure_host_devices().
_NUMERICS_PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from robustjax import cpu_setup
from robustjax import parallel
if sys.argv[2] == "configured":
  cpu_setup.configure_host_devices(num_devices=2)
import jax
import jax.numpy as jnp
import numpy as np
from robustjax import models
model = models.get_model("resnet8", num_classes=5, width=8, mean=(0.5,),
                         std=(0.25,))
x = jax.random.uniform(jax.random.key(4), (8, 16, 16, 1))
labels = jnp.arange(8) % 5
variables = jax.jit(model.init)(jax.random.key(5), x)
mesh = parallel.make_mesh()
xs, ys = parallel.shard_global_batch(mesh, np.asarray(x), np.asarray(labels))
def loss(params, x):
  logits, _ = model.apply({"params": params,
                           "batch_stats": variables["batch_stats"]}, x,
                          train=True, mutable=["batch_stats"])
  return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) *
                           jax.nn.one_hot(ys, 5), -1))
logits = jax.jit(lambda v, x: model.apply(v, x))(variables, xs)
grads = jax.jit(jax.grad(loss))(variables["params"], xs)
input_grad = jax.jit(jax.grad(loss, argnums=1))(variables["params"], xs)
out = {"devices": len(jax.devices()), "logits": np.asarray(logits).ravel(),
       "grads": np.concatenate([np.asarray(g).ravel()
                                for g in jax.tree.leaves(grads)]),
       "input_grad": np.asarray(input_grad).ravel()}
print(json.dumps({k: v if isinstance(v, int) else v.tolist()
                  for k, v in out.items()}))
"""


# Page faults per call of a program whose 64 MB output is allocated anew on
# every call (after warm-up calls), in a process with the environment given.
_PAGE_FAULTS_PROBE = """
import json, resource, sys
sys.path.insert(0, sys.argv[1])
from robustjax import cpu_setup
cpu_setup.configure_host_devices()
import jax
import jax.numpy as jnp
x = jnp.ones((1 << 24,), jnp.float32)  # 64 MB.
double = jax.jit(lambda x: x * 2.0)
def faults():
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(8):
  if i == 4:
    start = faults()
  y = double(x).block_until_ready()
  del y
print(json.dumps(dict(faults_per_call=(faults() - start) / 4,
                      pages=(1 << 26) // resource.getpagesize())))
"""


def _page_faults_probe(env):
  env = dict(env, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  out = subprocess.run(
      [sys.executable, "-c", _PAGE_FAULTS_PROBE, REPO],
      env=env, cwd=REPO, capture_output=True, text=True, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


class HugePagesTest(absltest.TestCase):
  """`cpu_setup.huge_pages_environ` (what the launchers restart with)."""

  def _glibc_235(self):
    libc, version = platform.libc_ver()
    return (sys.platform.startswith("linux") and libc == "glibc" and
            tuple(int(v) for v in version.split(".")[:2]) >= (2, 35))

  def test_environment(self):
    if not self._glibc_235():
      self.assertIsNone(cpu_setup.huge_pages_environ({}, thp_mode="madvise"))
      self.skipTest("the glibc tunable needs Linux with glibc >= 2.35; "
                    f"here: {sys.platform}, {platform.libc_ver()}")
    tunable = cpu_setup.HUGE_PAGES_TUNABLE
    env = cpu_setup.huge_pages_environ({"A": "1"}, thp_mode="madvise")
    self.assertEqual(env, {"A": "1", "GLIBC_TUNABLES": tunable})
    # Other tunables are kept; a hugetlb setting of the user's wins.
    env = cpu_setup.huge_pages_environ(
        {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}, thp_mode="madvise")
    self.assertEqual(env["GLIBC_TUNABLES"],
                     f"glibc.malloc.tcache_count=0:{tunable}")
    self.assertIsNone(cpu_setup.huge_pages_environ(
        {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, thp_mode="madvise"))
    # THP "always" gives huge pages already, "never" none at all.
    for mode in ("always", "never", ""):
      self.assertIsNone(cpu_setup.huge_pages_environ({}, thp_mode=mode), mode)

  def test_thp_mode_is_read_from_sysfs(self):
    path = self.create_tempfile(
        content="always [madvise] never\n").full_path
    self.assertEqual(cpu_setup._thp_mode(path), "madvise")
    self.assertEqual(cpu_setup._thp_mode(path + ".missing"), "")

  def test_huge_pages_stop_the_page_faults(self):
    env = cpu_setup.huge_pages_environ()
    if env is None:
      self.skipTest("huge_pages_environ() changes nothing here (needs "
                    "Linux, glibc >= 2.35, THP mode madvise; this machine: "
                    f"{platform.libc_ver()}, THP {cpu_setup._thp_mode()!r})")
    # glibc maps a 64 MB buffer afresh and unmaps it when freed, so every
    # call faults its pages in again: 4 KiB pages, or 2 MiB huge pages.
    plain = dict(os.environ)
    plain.pop("GLIBC_TUNABLES", None)
    fresh = _page_faults_probe(plain)
    self.assertGreater(fresh["faults_per_call"], fresh["pages"] / 2)
    huge = _page_faults_probe(env)
    # (The mapping's unaligned ends still take 4 KiB pages: ~550 here.)
    self.assertLess(huge["faults_per_call"], huge["pages"] / 10)


class CpuMallocTest(absltest.TestCase):
  """`cpu_setup.cpu_malloc_environ` (the launchers' restart, `--cpu_malloc`)."""

  def _linux_cpu(self):
    if not (sys.platform.startswith("linux")
            and platform_info.cpu_only_process()):
      self.skipTest("the allocator restart is for CPU-only processes on "
                    f"Linux; here: {sys.platform}")

  def _mimalloc(self):
    library = cpu_setup.mimalloc_library()
    if library is None:
      self.skipTest(f"{cpu_setup.MIMALLOC_DISTRIBUTION} is not installed "
                    "(a dependency on Linux: pip install -c constraints.txt "
                    "-e .)")
    return library

  def test_unknown_allocator_says_what_to_use(self):
    with self.assertRaisesRegex(ValueError, "mimalloc, glibc_huge_pages"):
      cpu_setup.cpu_malloc_environ("jemalloc", {})

  def test_mimalloc_environment(self):
    self._linux_cpu()
    library = self._mimalloc()
    self.assertIsNone(cpu_setup.cpu_malloc_environ("system", {}))
    env = cpu_setup.cpu_malloc_environ("mimalloc", {"A": "1"})
    self.assertEqual(env, dict({"A": "1", "LD_PRELOAD": library},
                               **dict(cpu_setup.MIMALLOC_OPTIONS)))
    # Another preload is kept; a mimalloc option of the user's wins.
    env = cpu_setup.cpu_malloc_environ(
        "mimalloc", {"LD_PRELOAD": "/x/libfoo.so",
                     "MIMALLOC_PURGE_DELAY": "10"})
    self.assertEqual(env["LD_PRELOAD"], f"{library}:/x/libfoo.so")
    self.assertEqual(env["MIMALLOC_PURGE_DELAY"], "10")
    # Once restarted (or with the user's own allocator): nothing to change.
    self.assertIsNone(cpu_setup.cpu_malloc_environ("mimalloc", env))
    self.assertIsNone(cpu_setup.cpu_malloc_environ(
        "mimalloc", {"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}))
    self.assertIsNone(cpu_setup.cpu_malloc_environ(
        "glibc_huge_pages", {"LD_PRELOAD": "/usr/lib/libtcmalloc.so.4"}))

  def test_without_mimalloc_glibc_huge_pages(self):
    self._linux_cpu()
    with mock.patch.object(cpu_setup, "mimalloc_library", return_value=None):
      self.assertEqual(
          cpu_setup.cpu_malloc_environ("mimalloc", {"A": "1"}, "madvise"),
          cpu_setup.huge_pages_environ({"A": "1"}, "madvise"))
    self.assertEqual(
        cpu_setup.cpu_malloc_environ("glibc_huge_pages", {}, "madvise"),
        cpu_setup.huge_pages_environ({}, "madvise"))

  def test_a_process_that_may_use_an_accelerator_keeps_its_allocator(self):
    with mock.patch.object(platform_info, "cpu_only_process",
                           return_value=False):
      for malloc in cpu_setup.CPU_MALLOCS:
        self.assertIsNone(cpu_setup.cpu_malloc_environ(malloc, {}), malloc)

  def test_in_use(self):
    self.assertEqual(cpu_setup.cpu_malloc_in_use({}), "glibc")
    self.assertEqual(
        cpu_setup.cpu_malloc_in_use({"GLIBC_TUNABLES": "glibc.malloc.x=1"}),
        "glibc (GLIBC_TUNABLES=glibc.malloc.x=1)")
    self.assertEqual(cpu_setup.cpu_malloc_in_use(
        {"LD_PRELOAD": "/x/libfoo.so /usr/lib/libjemalloc.so.2"}), "jemalloc")
    env = {"LD_PRELOAD": "/p/libmimalloc.so.3", "MIMALLOC_PURGE_DELAY": "-1"}
    self.assertRegex(cpu_setup.cpu_malloc_in_use(env),
                     r"^mimalloc( \S+)? \(MIMALLOC_PURGE_DELAY=-1\)$")

  def test_in_use_says_when_the_preload_did_not_load(self):
    maps = self.create_tempfile(content=(
        "7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n"))
    env = {"LD_PRELOAD": "/p/libmimalloc.so.3", "MIMALLOC_PURGE_DELAY": "-1"}
    with mock.patch.dict(os.environ, env):
      self.assertEqual(
          cpu_setup.cpu_malloc_in_use(maps=maps.full_path),
          "glibc; /p/libmimalloc.so.3 in LD_PRELOAD did not load")
      maps.write_text(maps.read_text() +
                      "7f02-7f03 r-xp 0 08:01 2 /p/libmimalloc.so.3.4\n")
      self.assertStartsWith(cpu_setup.cpu_malloc_in_use(maps=maps.full_path),
                            "mimalloc")

  def test_mimalloc_stops_the_page_faults_and_keeps_the_numbers(self):
    self._linux_cpu()
    self._mimalloc()
    plain = dict(os.environ)
    for k in ("GLIBC_TUNABLES", "LD_PRELOAD"):
      plain.pop(k, None)
    env = cpu_setup.cpu_malloc_environ("mimalloc", plain)
    # glibc maps a 64 MB output afresh on every call and faults it in;
    # mimalloc hands the freed block out again.
    fresh = _page_faults_probe(plain)
    self.assertGreater(fresh["faults_per_call"], fresh["pages"] / 2)
    reused = _page_faults_probe(env)
    self.assertLess(reused["faults_per_call"], reused["pages"] / 100)
    # The allocator moves speed and memory, not numbers: bit-identical.
    runs = {}
    for name, environ in (("glibc", plain), ("mimalloc", env)):
      environ = dict(environ, JAX_PLATFORMS="cpu")
      environ.pop("XLA_FLAGS", None)
      out = subprocess.run(
          [sys.executable, "-c", _NUMERICS_PROBE, REPO, "configured"],
          env=environ, cwd=REPO, capture_output=True, text=True, check=True)
      runs[name] = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("logits", "grads", "input_grad"):
      self.assertGreater(np.linalg.norm(runs["glibc"][key]), 0, key)
      np.testing.assert_array_equal(runs["mimalloc"][key],
                                    runs["glibc"][key], key)


class ConfigureHostDevicesTest(absltest.TestCase):
  """`cpu_setup.configure_host_devices`, each case in a fresh interpreter."""

  def test_default_is_one_device_per_core_power_of_two(self):
    cores = min(len(os.sched_getaffinity(0)), 8)
    expected = 1 << (cores.bit_length() - 1)
    r = _configure_probe()
    self.assertEqual(r["devices"], expected)
    self.assertEqual(r["first"], expected)
    self.assertEqual(r["second"], 0)  # After start-up: a no-op.
    for flag in cpu_setup.CPU_XLA_FLAGS + cpu_setup.CPU_ONLY_XLA_FLAGS:
      self.assertIn(flag, r["xla_flags"])

  def test_cpu_flags_are_left_out_where_an_accelerator_may_run(self):
    # JAX may fall back to the CPU ("cuda,cpu" on a machine without a GPU),
    # but a GPU's XLA would read the flags too (and stop at start-up on one
    # it does not know): no XLA:CPU flag in a process that may get one.
    r = _configure_probe(platforms="cuda,cpu")
    self.assertEqual(r["platform"], "cpu")
    self.assertEqual(r["xla_flags"], "")
    for flag in cpu_setup.CPU_XLA_FLAGS + cpu_setup.CPU_ONLY_XLA_FLAGS:
      self.assertNotIn(flag.split("=")[0], r["xla_flags"])
    r = _configure_probe(xla_flags="--xla_backend_optimization_level=2")
    self.assertEqual(r["xla_flags"].count("xla_backend_optimization_level"),
                     1)
    self.assertIn("--xla_backend_optimization_level=2", r["xla_flags"])

  def test_explicit_count(self):
    r = _configure_probe(num_devices=3)
    self.assertEqual((r["first"], r["devices"]), (3, 3))
    # Evaluation meshes span every device; training uses one by default.
    self.assertEqual((r["mesh_devices"], r["train_devices"]), (3, 1))

  def test_train_devices(self):
    r = _configure_probe(num_devices=4, train_devices=2)
    self.assertEqual((r["mesh_devices"], r["train_devices"]), (4, 2))
    r = _configure_probe(num_devices=4, train_devices=None)
    self.assertEqual((r["mesh_devices"], r["train_devices"]), (4, 4))
    r = _configure_probe(num_devices=2, train_devices=8)  # Capped.
    self.assertEqual(r["train_devices"], 2)

  def test_user_device_count_flag_is_kept(self):
    r = _configure_probe(
        xla_flags="--xla_force_host_platform_device_count=5")
    self.assertEqual((r["first"], r["devices"]), (0, 5))
    self.assertIn("--xla_force_host_platform_device_count=5", r["xla_flags"])
    # The user's devices: training uses them all too.
    self.assertEqual((r["mesh_devices"], r["train_devices"]), (5, 5))

  def test_configured_process_computes_what_the_default_one_does(self):
    # The speed settings change the convolution algorithm and split the
    # batch; the numbers may move by float rounding only.
    runs = {}
    for mode in ("default", "configured"):
      env = dict(os.environ, JAX_PLATFORMS="cpu")
      env.pop("XLA_FLAGS", None)
      out = subprocess.run([sys.executable, "-c", _NUMERICS_PROBE, REPO, mode],
                           env=env, cwd=REPO, capture_output=True, text=True,
                           check=True)
      runs[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    self.assertEqual(runs["default"]["devices"], 1)
    self.assertEqual(runs["configured"]["devices"], 2)
    for name in ("logits", "grads", "input_grad"):
      a = np.asarray(runs["configured"][name])
      b = np.asarray(runs["default"][name])
      self.assertGreater(np.linalg.norm(b), 0, name)
      # Relative to the tensor's norm (per-element ratios blow up near 0).
      self.assertLess(np.linalg.norm(a - b) / np.linalg.norm(b), 1e-5, name)

  def test_user_xla_cpu_flag_is_not_overridden(self):
    mine = "--xla_cpu_experimental_ynn_fusion_type=individual_convolution"
    r = _configure_probe(xla_flags=mine)
    self.assertEqual(r["xla_flags"].count("ynn_fusion_type"), 1)
    self.assertIn(mine, r["xla_flags"])


class TrainStepCompilerOptionsTest(absltest.TestCase):
  """`cpu_setup.train_step_compiler_options` (XLA:CPU elementwise fusions)."""

  def test_only_above_the_threshold_on_a_configured_cpu(self):
    big = cpu_setup.ELTWISE_FUSION_MIN_ELEMENTS
    ours = cpu_setup.CPU_XLA_FLAGS[0]
    with mock.patch.dict(os.environ, {"XLA_FLAGS": ours}):
      options = cpu_setup.train_step_compiler_options(big, "cpu")
      self.assertIn("LIBRARY_FUSION_TYPE_ELTWISE",
                    options["xla_cpu_experimental_ynn_fusion_type"])
      self.assertNotIn("INDIVIDUAL_CONVOLUTION",  # As the process flag.
                       options["xla_cpu_experimental_ynn_fusion_type"])
      self.assertIsNone(cpu_setup.train_step_compiler_options(big - 1, "cpu"))
      self.assertIsNone(cpu_setup.train_step_compiler_options(None, "cpu"))
      self.assertIsNone(cpu_setup.train_step_compiler_options(big, "gpu"))
    # A process the launchers did not set up, or the user's own choice.
    for flags in ("", "--xla_cpu_experimental_ynn_fusion_type=reduce"):
      with mock.patch.dict(os.environ, {"XLA_FLAGS": flags}):
        self.assertIsNone(cpu_setup.train_step_compiler_options(big, "cpu"))

  def test_options_change_the_program_not_the_numbers(self):
    model = models.get_model("resnet20", num_classes=5, width=4,
                             mean=(0.5,), std=(0.25,))
    x = jax.random.uniform(jax.random.key(0), (8, 16, 16, 1))
    labels = jnp.arange(8) % 5
    variables = model.init(jax.random.key(1), x)

    def loss(params, x):
      logits, _ = model.apply({"params": params,
                               "batch_stats": variables["batch_stats"]}, x,
                              train=True, mutable=["batch_stats"])
      return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) *
                               jax.nn.one_hot(labels, 5), -1))

    options = dict(((cpu_setup._YNN_OPTION,
                     ",".join(cpu_setup._YNN_ELTWISE_TYPES)),))
    grad = jax.value_and_grad(loss, argnums=(0, 1))
    plain = jax.jit(grad).lower(variables["params"], x).compile()
    fused = jax.jit(grad, compiler_options=options).lower(
        variables["params"], x).compile()
    self.assertNotEqual(plain.as_text(), fused.as_text())
    a = jax.tree.leaves(fused(variables["params"], x))
    b = jax.tree.leaves(plain(variables["params"], x))
    for name, u, v in (("loss", a[:1], b[:1]),
                       ("weight grads", a[1:-1], b[1:-1]),
                       ("input grad", a[-1:], b[-1:])):
      u = np.concatenate([np.ravel(t) for t in u])
      v = np.concatenate([np.ravel(t) for t in v])
      self.assertGreater(np.linalg.norm(v), 0, name)
      self.assertLess(np.linalg.norm(u - v) / np.linalg.norm(v), 1e-5, name)


if __name__ == "__main__":
  absltest.main()
