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


if __name__ == "__main__":
  if len(sys.argv) > 1 and sys.argv[1] == WORKER:
    sys.path.insert(0, REPO)
    _worker_main(sys.argv[2:])
  else:
    absltest.main()
