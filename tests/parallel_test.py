"""Data parallelism: 8 simulated devices and 2 processes match 1 device.

XLA fixes the number of CPU devices when JAX starts, so the multi-device
sides run in subprocesses: this file re-executed as a worker with
`XLA_FLAGS=--xla_force_host_platform_device_count=8` (one process, 8
devices) or as 2 processes x 2 devices joined by `jax.distributed` over
localhost (gloo CPU collectives), a stand-in for a 2-host TPU VM / GPU
cluster. The test process itself keeps its single device, as does the rest
of the suite. Each side trains the same tiny run with the real trainer,
evaluates the same fixed variables (clean accuracy, FGSM robust accuracy,
and K=2 models x corruption severities x eps through
the evaluator registry) and, with one process, runs the K-member train
step data-parallel; results must agree within float tolerance.

  python -m pytest tests/parallel_test.py
"""
# pylint: disable=g-import-not-at-top  (JAX is imported lazily: see above.)

import copy
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = "--parallel-test-worker"
# A 1-ulp difference (e.g. another summation order across devices) can grow
# to ~1e-3 in some weights over a few SGD steps on 32-image batches.
PARAM_ATOL = 5e-3


# ----------------------------------------------------------------------------
# The work each side does (imports JAX lazily: the worker sets XLA_FLAGS
# first).

def _tiny_config(batch_size=32):
  from configs import digits_resnet
  c = digits_resnet.get_config("runlocal,model=resnet8,width=4")
  c.dataset.max_train_examples = 128
  c.dataset.max_eval_examples = 64
  c.batch_size = batch_size
  c.num_train_steps = 6
  c.eval_every_steps = 6
  c.checkpoint_every_steps = 6
  return c


def _flat(tree):
  import flax
  return {k: np.asarray(v) for k, v in flax.traverse_util.flatten_dict(
      tree, sep="/").items() if v is not None}


def _unflat(flat):
  import flax
  return flax.traverse_util.unflatten_dict(dict(flat), sep="/")


def run_side(out_dir, variables_path=None, vmapped_step=True):
  """Trains, evaluates, runs the vmapped step; writes results to out_dir.

  Args:
    out_dir: folder for workdirs and the results (`results.json`, `*.npz`).
    variables_path: npz of the variables to evaluate (None: this side's
      trained ones, which it also saves as `variables.npz`).
    vmapped_step: also run 3 steps of the vmapped train step (one process).

  Returns:
    The results dict (also written by process 0).
  """
  import jax
  import jax.numpy as jnp
  from robustjax import models
  from robustjax import parallel
  from robustjax.data import pipeline
  from robustjax.data import loader
  from robustjax.data.registry import Split
  from robustjax.models import batched
  from robustjax.models import factory
  from robustjax.robustness import attacks
  from robustjax.robustness import evaluators
  from robustjax.study import sweep as sweep_lib
  from robustjax.robustness.evaluators import attack as attack_eval
  from robustjax.train import trainer

  main = jax.process_index() == 0
  res = {"devices": jax.device_count(), "processes": jax.process_count()}
  config = _tiny_config()
  workdir = os.path.join(out_dir, "train")
  state = trainer.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "final_metrics.json")) as f:
    res["final"] = json.load(f)
  rows = [json.loads(line) for line in open(
      os.path.join(workdir, "metrics.jsonl"))]
  res["train_rows"] = [(r["step"], r["loss"]) for r in rows
                       if r["split"] == "train"]
  res["eval_steps"] = [r["step"] for r in rows if r["split"] == "eval"]
  trained = jax.device_get(state.variables)
  if main:
    np.savez(os.path.join(out_dir, "params.npz"), **_flat(trained["params"]))
    if variables_path is None:
      variables_path = os.path.join(out_dir, "variables.npz")
      np.savez(variables_path, **_flat(trained))
  if variables_path is None:  # Other processes: wait for process 0's file.
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("variables saved")
    variables_path = os.path.join(out_dir, "variables.npz")
  elif jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("variables saved")
  variables = _unflat(np.load(variables_path))

  # Evaluation of fixed variables: clean accuracy, attacks, vmapped sweep.
  model = factory.build_model(config)
  apply_fn = models.inference_fn(model)
  _, evals = loader.load_data(config)
  res["accuracy"] = {n: evaluators.accuracy(apply_fn, variables, s, 48)
                     for n, s in evals.items()}
  mesh = parallel.make_mesh()
  test = evals["test"]
  n = 64
  images = pipeline.to_float(test.images[:n])
  labels = jnp.asarray(test.labels[:n])
  # Global arrays sharded over every device of every process.
  images_s = jax.make_array_from_callback(
      images.shape, parallel.batch_sharded(mesh),
      lambda idx: np.asarray(images)[idx])
  labels_s = jax.make_array_from_callback(
      labels.shape, parallel.batch_sharded(mesh),
      lambda idx: np.asarray(labels)[idx])
  key = jax.random.PRNGKey(7)
  eps = (0.0, 0.05, 0.15)
  for name, attack in (("fgsm", attacks.get_attack("fgsm")),):
    acc = attack_eval.robust_accuracy(apply_fn, variables, images_s,
                                      labels_s, key, eps, attack)
    res[f"robust/{name}"] = np.asarray(jax.device_get(acc)).tolist()
  # The evaluator registry on two models of one architecture.
  evals = copy.deepcopy(config.evals)
  evals.corruptions.names = ("gaussian_noise",)
  evals.corruptions.severities = (1, 5)
  evals.attacks.names = ("fgsm",)
  evals.attacks.eps = eps
  evals.attacks.chunk_size = 32
  small = Split(test.images[:n], test.labels[:n], test.name)
  cells = evaluators.build(evals, small, {}, 7)
  shrunk = jax.tree.map(lambda x: x * 0.9, variables)
  res["sweep"] = [{r.rows[0]["shift"] + "/" + r.rows[0]["name"]:
                   [row["accuracy"] for row in r.rows]
                   for r in evaluators.evaluate(apply_fn, v, cells)}
                  for v in (variables, shrunk)]

  # The K-member train loop: 2 members (dense and 50 % pruned at init),
  # each with its own batch stream, sharded on the data axis.
  if vmapped_step:
    members = []
    for i, sparsity in enumerate((0.0, 0.5)):
      c = _tiny_config()
      c.seed = i
      c.compress.init_sparsity = sparsity
      c.num_train_steps = 3
      members.append(trainer.Member(
          c, os.path.join(out_dir, f"member{i}"),
          sweep_lib._member_recipe(c, True)))  # pylint: disable=protected-access
    states = trainer.train_members(members, os.path.join(out_dir, "group"))
    np.savez(os.path.join(out_dir, "vmapped_params.npz"),
             **_flat(jax.device_get(batched.stack(
                 [s.params for s in states]))))
    res["vmapped_loss"] = [
        [r["loss"] for r in map(json.loads, open(os.path.join(
            out_dir, f"member{i}", "metrics.jsonl"))) if r["split"] == "train"]
        for i in range(2)]

  # A batch that does not divide by the device count (2, 4 or 8 here).
  if jax.device_count() > 1:
    try:
      trainer.train_and_evaluate(_tiny_config(batch_size=18),
                                 os.path.join(out_dir, "bad"))
    except ValueError as e:
      res["bad_batch_error"] = str(e)

  if main:
    with open(os.path.join(out_dir, "results.json"), "w") as f:
      json.dump(res, f)
  return res


def _worker_main(argv):
  """`parallel_test.py --parallel-test-worker OUT [VARS] [PID NPROC PORT]`."""
  out_dir, variables_path = argv[0], argv[1]
  from absl import logging
  import jax
  logging.use_absl_handler()
  logging.set_verbosity(logging.INFO)
  if len(argv) > 2:
    pid, nproc, port = (int(a) for a in argv[2:5])
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # Generous timeouts: on a busy 2-core machine a process can lag far
    # behind the other at a barrier.
    jax.distributed.initialize(f"localhost:{port}", nproc, pid,
                               initialization_timeout=600,
                               heartbeat_timeout_seconds=600)
  run_side(out_dir, variables_path, vmapped_step=len(argv) == 2)


# ----------------------------------------------------------------------------
# The tests (this process: 1 device).

def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _env(devices):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  return env


class DataParallelTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    import jax
    cls.tmp = tempfile.mkdtemp()
    cls.one_dir = os.path.join(cls.tmp, "one")
    cls.one = run_side(cls.one_dir)
    cls.one_devices = jax.device_count()
    variables = os.path.join(cls.one_dir, "variables.npz")
    me = os.path.abspath(__file__)
    # One process with 8 devices, and 2 processes with 2 devices each.
    cls.eight_dir = os.path.join(cls.tmp, "eight")
    procs = [subprocess.Popen(
        [sys.executable, me, WORKER, cls.eight_dir, variables],
        env=_env(8), cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)]
    port = _free_port()
    cls.multi_dir = os.path.join(cls.tmp, "multi")
    procs += [subprocess.Popen(
        [sys.executable, me, WORKER, cls.multi_dir, variables, str(pid), "2",
         str(port)], env=_env(2), cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True) for pid in range(2)]
    cls.logs = [p.communicate(timeout=900)[0] for p in procs]
    for name, p, out in zip(("8 devices", "process 0", "process 1"), procs,
                            cls.logs):
      assert p.returncode == 0, f"{name} worker failed (rc {p.returncode}):" + (
          "".join(f"\n--- {n} ---\n{o[-4000:]}" for n, o in zip(
              ("8 devices", "process 0", "process 1"), cls.logs)))
    with open(os.path.join(cls.eight_dir, "results.json")) as f:
      cls.eight = json.load(f)
    with open(os.path.join(cls.multi_dir, "results.json")) as f:
      cls.multi = json.load(f)

  def sides(self):
    return (("8 devices", self.eight, self.eight_dir),
            ("2 processes x 2 devices", self.multi, self.multi_dir))

  def test_topology(self):
    self.assertEqual(self.one_devices, 1)
    self.assertEqual((self.eight["devices"], self.eight["processes"]), (8, 1))
    self.assertEqual((self.multi["devices"], self.multi["processes"]), (4, 2))
    self.assertIn("data-parallel mesh {'data': 8}", self.logs[0])

  def test_training_matches_one_device(self):
    want = np.load(os.path.join(self.one_dir, "params.npz"))
    for name, res, d in self.sides():
      got = np.load(os.path.join(d, "params.npz"))
      self.assertEqual(sorted(got), sorted(want))
      for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=PARAM_ATOL,
                                   err_msg=f"{name}: {k}")
      self.assertEqual([s for s, _ in res["train_rows"]],
                       [s for s, _ in self.one["train_rows"]], name)
      np.testing.assert_allclose([l for _, l in res["train_rows"]],
                                 [l for _, l in self.one["train_rows"]],
                                 atol=1e-3, err_msg=name)

  def test_final_accuracy_matches_one_device(self):
    for name, res, _ in self.sides():
      for k, v in self.one["final"].items():
        self.assertAlmostEqual(res["final"][k], v, delta=1.5 / 64,
                               msg=f"{name}: {k}")

  def test_only_process_zero_writes_the_run_record(self):
    # Both processes ran the same training in the same workdir: a row
    # written by both would show up as a duplicated step.
    for name, res, _ in self.sides():
      self.assertEqual(res["eval_steps"], self.one["eval_steps"], name)
      steps = [s for s, _ in res["train_rows"]]
      self.assertEqual(steps, sorted(set(steps)), name)

  def test_evaluation_matches_one_device(self):
    for name, res, _ in self.sides():
      np.testing.assert_allclose(res["robust/fgsm"], self.one["robust/fgsm"],
                                 atol=1.5 / 64, err_msg=name)
      for got, want in zip(res["sweep"], self.one["sweep"]):
        self.assertEqual(sorted(got), sorted(want))
        for k, v in want.items():
          np.testing.assert_allclose(got[k], v, atol=1.5 / 64,
                                     err_msg=f"{name}: sweep {k}")
    for name, res, _ in self.sides():
      for split, acc in self.one["accuracy"].items():
        self.assertAlmostEqual(res["accuracy"][split], acc, places=6,
                               msg=f"{name}: {split}")
    # eps = 0 of the attack and the sweep's clean column are the clean
    # accuracy on the first 64 test images (the whole capped split).
    self.assertAlmostEqual(self.one["robust/fgsm"][0],
                           self.one["accuracy"]["test"], places=6)
    self.assertAlmostEqual(self.one["sweep"][0]["clean/source"][0],
                           self.one["accuracy"]["test"], places=6)
    self.assertAlmostEqual(self.one["sweep"][0]["adversarial/fgsm"][0],
                           self.one["accuracy"]["test"], places=6)

  def test_vmapped_step_matches_one_device(self):
    want = np.load(os.path.join(self.one_dir, "vmapped_params.npz"))
    got = np.load(os.path.join(self.eight_dir, "vmapped_params.npz"))
    for k in want:
      np.testing.assert_allclose(got[k], want[k], atol=PARAM_ATOL, err_msg=k)
    np.testing.assert_allclose(self.eight["vmapped_loss"],
                               self.one["vmapped_loss"], rtol=1e-4)

  def test_batch_not_dividing_the_devices_is_a_clear_error(self):
    self.assertIn("batch_size=18 does not divide by the 8 devices",
                  self.eight["bad_batch_error"])
    self.assertIn("batch_size=18 does not divide by the 4 devices",
                  self.multi["bad_batch_error"])


# What configure_host_devices() did in a fresh interpreter: device count,
# XLA_FLAGS, return values of a first and a second call.
_CONFIGURE_PROBE = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
from robustjax import parallel
kwargs = json.loads(sys.argv[2])
first = parallel.configure_host_devices(**kwargs)
import jax
import jax.numpy as jnp
jnp.zeros(2).block_until_ready()
second = parallel.configure_host_devices(**kwargs)
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
from robustjax import parallel
if sys.argv[2] == "configured":
  parallel.configure_host_devices(num_devices=2)
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
from robustjax import parallel
parallel.configure_host_devices()
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
  """`parallel.huge_pages_environ` (what the launchers restart with)."""

  def _glibc_235(self):
    libc, version = platform.libc_ver()
    return (sys.platform.startswith("linux") and libc == "glibc" and
            tuple(int(v) for v in version.split(".")[:2]) >= (2, 35))

  def test_environment(self):
    from robustjax import parallel
    if not self._glibc_235():
      self.assertIsNone(parallel.huge_pages_environ({}, thp_mode="madvise"))
      self.skipTest("the glibc tunable needs Linux with glibc >= 2.35; "
                    f"here: {sys.platform}, {platform.libc_ver()}")
    tunable = parallel.HUGE_PAGES_TUNABLE
    env = parallel.huge_pages_environ({"A": "1"}, thp_mode="madvise")
    self.assertEqual(env, {"A": "1", "GLIBC_TUNABLES": tunable})
    # Other tunables are kept; a hugetlb setting of the user's wins.
    env = parallel.huge_pages_environ(
        {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}, thp_mode="madvise")
    self.assertEqual(env["GLIBC_TUNABLES"],
                     f"glibc.malloc.tcache_count=0:{tunable}")
    self.assertIsNone(parallel.huge_pages_environ(
        {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, thp_mode="madvise"))
    # THP "always" gives huge pages already, "never" none at all.
    for mode in ("always", "never", ""):
      self.assertIsNone(parallel.huge_pages_environ({}, thp_mode=mode), mode)

  def test_thp_mode_is_read_from_sysfs(self):
    from robustjax import parallel
    path = self.create_tempfile(
        content="always [madvise] never\n").full_path
    self.assertEqual(parallel._thp_mode(path), "madvise")
    self.assertEqual(parallel._thp_mode(path + ".missing"), "")

  def test_huge_pages_stop_the_page_faults(self):
    from robustjax import parallel
    env = parallel.huge_pages_environ()
    if env is None:
      self.skipTest("huge_pages_environ() changes nothing here (needs "
                    "Linux, glibc >= 2.35, THP mode madvise; this machine: "
                    f"{platform.libc_ver()}, THP {parallel._thp_mode()!r})")
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
  """`parallel.cpu_malloc_environ` (the launchers' restart, `--cpu_malloc`)."""

  def _linux_cpu(self):
    from robustjax import parallel
    if not (sys.platform.startswith("linux") and parallel.cpu_only_process()):
      self.skipTest("the allocator restart is for CPU-only processes on "
                    f"Linux; here: {sys.platform}")

  def _mimalloc(self):
    from robustjax import parallel
    library = parallel.mimalloc_library()
    if library is None:
      self.skipTest(f"{parallel.MIMALLOC_DISTRIBUTION} is not installed "
                    "(a dependency on Linux: pip install -c constraints.txt "
                    "-e .)")
    return library

  def test_unknown_allocator_says_what_to_use(self):
    from robustjax import parallel
    with self.assertRaisesRegex(ValueError, "mimalloc, glibc_huge_pages"):
      parallel.cpu_malloc_environ("jemalloc", {})

  def test_mimalloc_environment(self):
    from robustjax import parallel
    self._linux_cpu()
    library = self._mimalloc()
    self.assertIsNone(parallel.cpu_malloc_environ("system", {}))
    env = parallel.cpu_malloc_environ("mimalloc", {"A": "1"})
    self.assertEqual(env, dict({"A": "1", "LD_PRELOAD": library},
                               **dict(parallel.MIMALLOC_OPTIONS)))
    # Another preload is kept; a mimalloc option of the user's wins.
    env = parallel.cpu_malloc_environ(
        "mimalloc", {"LD_PRELOAD": "/x/libfoo.so",
                     "MIMALLOC_PURGE_DELAY": "10"})
    self.assertEqual(env["LD_PRELOAD"], f"{library}:/x/libfoo.so")
    self.assertEqual(env["MIMALLOC_PURGE_DELAY"], "10")
    # Once restarted (or with the user's own allocator): nothing to change.
    self.assertIsNone(parallel.cpu_malloc_environ("mimalloc", env))
    self.assertIsNone(parallel.cpu_malloc_environ(
        "mimalloc", {"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}))
    self.assertIsNone(parallel.cpu_malloc_environ(
        "glibc_huge_pages", {"LD_PRELOAD": "/usr/lib/libtcmalloc.so.4"}))

  def test_without_mimalloc_glibc_huge_pages(self):
    from unittest import mock
    from robustjax import parallel
    self._linux_cpu()
    with mock.patch.object(parallel, "mimalloc_library", return_value=None):
      self.assertEqual(
          parallel.cpu_malloc_environ("mimalloc", {"A": "1"}, "madvise"),
          parallel.huge_pages_environ({"A": "1"}, "madvise"))
    self.assertEqual(
        parallel.cpu_malloc_environ("glibc_huge_pages", {}, "madvise"),
        parallel.huge_pages_environ({}, "madvise"))

  def test_a_process_that_may_use_an_accelerator_keeps_its_allocator(self):
    from unittest import mock
    from robustjax import parallel
    with mock.patch.object(parallel, "cpu_only_process", return_value=False):
      for malloc in parallel.CPU_MALLOCS:
        self.assertIsNone(parallel.cpu_malloc_environ(malloc, {}), malloc)

  def test_in_use(self):
    from robustjax import parallel
    self.assertEqual(parallel.cpu_malloc_in_use({}), "glibc")
    self.assertEqual(
        parallel.cpu_malloc_in_use({"GLIBC_TUNABLES": "glibc.malloc.x=1"}),
        "glibc (GLIBC_TUNABLES=glibc.malloc.x=1)")
    self.assertEqual(parallel.cpu_malloc_in_use(
        {"LD_PRELOAD": "/x/libfoo.so /usr/lib/libjemalloc.so.2"}), "jemalloc")
    env = {"LD_PRELOAD": "/p/libmimalloc.so.3", "MIMALLOC_PURGE_DELAY": "-1"}
    self.assertRegex(parallel.cpu_malloc_in_use(env),
                     r"^mimalloc( \S+)? \(MIMALLOC_PURGE_DELAY=-1\)$")

  def test_in_use_says_when_the_preload_did_not_load(self):
    from unittest import mock
    from robustjax import parallel
    maps = self.create_tempfile(content=(
        "7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n"))
    env = {"LD_PRELOAD": "/p/libmimalloc.so.3", "MIMALLOC_PURGE_DELAY": "-1"}
    with mock.patch.dict(os.environ, env):
      self.assertEqual(
          parallel.cpu_malloc_in_use(maps=maps.full_path),
          "glibc; /p/libmimalloc.so.3 in LD_PRELOAD did not load")
      maps.write_text(maps.read_text() +
                      "7f02-7f03 r-xp 0 08:01 2 /p/libmimalloc.so.3.4\n")
      self.assertStartsWith(parallel.cpu_malloc_in_use(maps=maps.full_path),
                            "mimalloc")

  def test_mimalloc_stops_the_page_faults_and_keeps_the_numbers(self):
    from robustjax import parallel
    self._linux_cpu()
    self._mimalloc()
    plain = dict(os.environ)
    for k in ("GLIBC_TUNABLES", "LD_PRELOAD"):
      plain.pop(k, None)
    env = parallel.cpu_malloc_environ("mimalloc", plain)
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
  """`parallel.configure_host_devices`, each case in a fresh interpreter."""

  def test_default_is_one_device_per_core_power_of_two(self):
    from robustjax import parallel
    cores = min(len(os.sched_getaffinity(0)), 8)
    expected = 1 << (cores.bit_length() - 1)
    r = _configure_probe()
    self.assertEqual(r["devices"], expected)
    self.assertEqual(r["first"], expected)
    self.assertEqual(r["second"], 0)  # After start-up: a no-op.
    for flag in parallel.CPU_XLA_FLAGS + parallel.CPU_ONLY_XLA_FLAGS:
      self.assertIn(flag, r["xla_flags"])

  def test_cpu_flags_are_left_out_where_an_accelerator_may_run(self):
    from robustjax import parallel
    # JAX may fall back to the CPU ("cuda,cpu" on a machine without a GPU),
    # but a GPU's XLA would read the flags too (and stop at start-up on one
    # it does not know): no XLA:CPU flag in a process that may get one.
    r = _configure_probe(platforms="cuda,cpu")
    self.assertEqual(r["platform"], "cpu")
    self.assertEqual(r["xla_flags"], "")
    for flag in parallel.CPU_XLA_FLAGS + parallel.CPU_ONLY_XLA_FLAGS:
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
  """`parallel.train_step_compiler_options` (XLA:CPU elementwise fusions)."""

  def test_only_above_the_threshold_on_a_configured_cpu(self):
    from unittest import mock
    from robustjax import parallel
    big = parallel.ELTWISE_FUSION_MIN_ELEMENTS
    ours = parallel.CPU_XLA_FLAGS[0]
    with mock.patch.dict(os.environ, {"XLA_FLAGS": ours}):
      options = parallel.train_step_compiler_options(big, "cpu")
      self.assertIn("LIBRARY_FUSION_TYPE_ELTWISE",
                    options["xla_cpu_experimental_ynn_fusion_type"])
      self.assertNotIn("INDIVIDUAL_CONVOLUTION",  # As the process flag.
                       options["xla_cpu_experimental_ynn_fusion_type"])
      self.assertIsNone(parallel.train_step_compiler_options(big - 1, "cpu"))
      self.assertIsNone(parallel.train_step_compiler_options(None, "cpu"))
      self.assertIsNone(parallel.train_step_compiler_options(big, "gpu"))
    # A process the launchers did not set up, or the user's own choice.
    for flags in ("", "--xla_cpu_experimental_ynn_fusion_type=reduce"):
      with mock.patch.dict(os.environ, {"XLA_FLAGS": flags}):
        self.assertIsNone(parallel.train_step_compiler_options(big, "cpu"))

  def test_options_change_the_program_not_the_numbers(self):
    import jax
    import jax.numpy as jnp
    from robustjax import models
    from robustjax import parallel
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

    options = dict(((parallel._YNN_OPTION,
                     ",".join(parallel._YNN_ELTWISE_TYPES)),))
    grad = jax.value_and_grad(loss, argnums=(0, 1))
    plain = jax.jit(grad).lower(variables["params"], x).compile()
    fused = jax.jit(grad, compiler_options=options).lower(
        variables["params"], x).compile()
    self.assertNotEqual(plain.as_text(), fused.as_text())
    a = jax.tree.leaves(fused(variables["params"], x))
    b = jax.tree.leaves(plain(variables["params"], x))
    for name, u, v in (("loss", a[:1], b[:1]), ("weight grads", a[1:-1], b[1:-1]),
                       ("input grad", a[-1:], b[-1:])):
      u = np.concatenate([np.ravel(t) for t in u])
      v = np.concatenate([np.ravel(t) for t in v])
      self.assertGreater(np.linalg.norm(v), 0, name)
      self.assertLess(np.linalg.norm(u - v) / np.linalg.norm(v), 1e-5, name)

if __name__ == "__main__":
  if len(sys.argv) > 1 and sys.argv[1] == WORKER:
    sys.path.insert(0, REPO)
    _worker_main(sys.argv[2:])
  else:
    absltest.main()
