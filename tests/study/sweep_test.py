"""Tests for robustjax.study.sweep and launch/sweep.py.

The runner logic (points, grouping, resume, failures) is tested with fake
trainers; one end-to-end run trains a tiny 2-point vmapped sweep through the
launcher and reruns it to check that finished points are skipped.

  python -m pytest tests/study/sweep_test.py
"""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from unittest import mock

from absl.testing import absltest

from configs import digits_sweep
from robustjax import io
from robustjax.study import sweep as sweep_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _base():
  return digits_sweep.get_config("runlocal,width=4")


def _three_points(add):
  for sparsity in (0.0, 0.5):
    add(**{"seed": 0, "compress.init_sparsity": sparsity})
  add(name="wide", **{"model.width": 8})


class FakeTrainer:
  """Stands in for trainer.train_and_evaluate: records calls, can fail."""

  def __init__(self, fail=()):
    self.calls, self.fail = [], set(fail)

  def __call__(self, config, workdir, recipe=None):
    name = os.path.basename(workdir)
    self.calls.append(name)
    if name in self.fail:
      raise RuntimeError(f"boom in {name}")
    io.write_json(os.path.join(workdir, "final_metrics.json"),
                        {"step": 1, "test_accuracy": config.model.width / 100,
                         "sparsity": 0.0 if recipe is None else 1.0})


class PointsTest(absltest.TestCase):

  def test_points_names_and_overrides(self):
    points = sweep_lib.collect_points(_three_points, _base())
    self.assertEqual([p.name for p in points],
                     ["seed=0,init_sparsity=0.0", "seed=0,init_sparsity=0.5", "wide"])
    self.assertEqual(points[1].config.compress.init_sparsity, 0.5)
    self.assertEqual(points[2].config.model.width, 8)
    self.assertEqual(points[0].config.model.width, 4)  # Base untouched.

  def test_unknown_override_is_rejected_with_the_valid_names(self):
    with self.assertRaisesRegex(KeyError, "no field 'widht'.*width"):
      sweep_lib.collect_points(
          lambda add: add(**{"model.widht": 8}), _base())

  def test_duplicate_names_are_rejected(self):
    def sweep(add):
      add(name="a", seed=1)
      add(name="a", seed=2)
    with self.assertRaisesRegex(ValueError, "named 'a'"):
      sweep_lib.collect_points(sweep, _base())

  def test_digits_sweep_is_one_vmapped_group_of_eight(self):
    points = sweep_lib.collect_points(digits_sweep.sweep, _base())
    self.assertLen({p.name for p in points}, 8)
    groups = sweep_lib.plan_groups(points, vmap=True, max_models=8)
    self.assertEqual([len(g) for g in groups], [8])
    groups = sweep_lib.plan_groups(points, vmap=True, max_models=3)
    self.assertEqual([len(g) for g in groups], [3, 3, 2])
    self.assertEqual(digits_sweep.metrics(),
                     ["test_accuracy", "target/uci_accuracy"])

  def test_mixed_sweep_groups_vmappable_points_only(self):
    points = sweep_lib.collect_points(_three_points, _base())
    groups = sweep_lib.plan_groups(points, vmap=True, max_models=8)
    self.assertEqual([[p.name for p in g] for g in groups],
                     [["seed=0,init_sparsity=0.0", "seed=0,init_sparsity=0.5"],
                      ["wide"]])


class ResumeTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.workdir = self.create_tempdir().full_path

  def _run(self, fake, **kw):
    with mock.patch.object(sweep_lib.trainer, "train_and_evaluate", fake):
      return sweep_lib.run_sweep(_base(), self.workdir, _three_points,
                                    **kw)

  def test_resume_skips_finished_points_and_retries_failed_ones(self):
    first = FakeTrainer(fail={"wide"})
    with self.assertRaisesRegex(sweep_lib.SweepError, "1 of 3.*wide"):
      self._run(first)
    self.assertEqual(first.calls, ["seed=0,init_sparsity=0.0",
                                   "seed=0,init_sparsity=0.5", "wide"])
    status = sweep_lib.read_status(self.workdir)
    self.assertEqual(status["wide"]["status"], "failed")
    self.assertIn("boom in wide", status["wide"]["error"])
    self.assertEqual(status["seed=0,init_sparsity=0.5"]["metrics"]["sparsity"],
                     1.0)  # Pruned points get the pruning recipe.

    second = FakeTrainer()
    rows = self._run(second)
    self.assertEqual(second.calls, ["wide"])
    self.assertEqual({r["status"] for r in rows.values()}, {"done"})
    self.assertAlmostEqual(rows["wide"]["metrics"]["test_accuracy"], 0.08)

    third = FakeTrainer()
    self._run(third)
    self.assertEqual(third.calls, [])

  def test_runner_options_do_not_invalidate_finished_points(self):
    self._run(FakeTrainer())
    base = _base()
    base.sweep.vmap = not base.sweep.vmap
    again = FakeTrainer()
    with mock.patch.object(sweep_lib.trainer, "train_and_evaluate", again):
      sweep_lib.run_sweep(base, self.workdir, _three_points)
    self.assertEqual(again.calls, [])

  def test_changed_config_under_a_finished_point_is_an_error(self):
    self._run(FakeTrainer())
    base = _base()
    base.optimizer.learning_rate = 0.5
    with mock.patch.object(sweep_lib.trainer, "train_and_evaluate",
                           FakeTrainer()):
      with self.assertRaisesRegex(ValueError, "different config"):
        sweep_lib.run_sweep(base, self.workdir, _three_points)

  def test_vmapped_mode_trains_groups_in_one_call(self):
    groups = []

    def fake_members(members, workdir):
      groups.append([os.path.basename(m.workdir) for m in members])
      self.assertIn(sweep_lib.VMAPPED_DIR, workdir)
      for m in members:  # Every member of a pruned group gets a recipe.
        self.assertIsNotNone(m.recipe)
        io.write_json(os.path.join(m.workdir, "final_metrics.json"), {
            "step": 1, "test_accuracy": m.config.compress.init_sparsity})

    with mock.patch.object(sweep_lib.trainer, "train_members", fake_members):
      rows = self._run(FakeTrainer(), vmap=True)
    self.assertEqual(groups, [["seed=0,init_sparsity=0.0", "seed=0,init_sparsity=0.5"]])
    self.assertEqual(rows["seed=0,init_sparsity=0.5"]["mode"], "vmapped")
    self.assertEqual(rows["seed=0,init_sparsity=0.5"]["metrics"]["test_accuracy"],
                     0.5)
    self.assertEqual(rows["wide"]["mode"], "single")


_TINY_SWEEP = textwrap.dedent("""\
    from configs import digits_sweep

    def get_config(arg=None):
      c = digits_sweep.get_config("runlocal,width=4")
      c.dataset.max_train_examples = 64
      c.dataset.max_eval_examples = 32
      c.batch_size = 16
      c.num_train_steps = 3
      c.eval_every_steps = 3
      c.checkpoint_every_steps = 3
      return c

    def sweep(add):
      for seed, sparsity in ((0, 0.0), (1, 0.5)):
        add(**{"seed": seed, "compress.init_sparsity": sparsity})

    def metrics():
      return ["test_accuracy"]
    """)


class LauncherEndToEndTest(absltest.TestCase):

  def test_vmapped_sweep_runs_then_resume_skips_everything(self):
    tmp = tempfile.mkdtemp()
    config_path = os.path.join(tmp, "tiny_sweep.py")
    with open(config_path, "w") as f:
      f.write(_TINY_SWEEP)
    workdir = os.path.join(tmp, "sweep")
    cmd = [sys.executable, os.path.join(REPO, "launch", "sweep.py"),
           f"--config={config_path}", f"--workdir={workdir}"]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep +
               os.environ.get("PYTHONPATH", ""))
    env.pop("XLA_FLAGS", None)
    first = subprocess.run(cmd, capture_output=True, text=True, env=env,
                           cwd=REPO, timeout=600, check=False)
    self.assertEqual(first.returncode, 0, first.stderr[-3000:])
    self.assertIn("as one vmapped program", first.stderr)
    names = ["seed=0,init_sparsity=0.0", "seed=1,init_sparsity=0.5"]
    for name in names:
      with open(os.path.join(workdir, name, "final_metrics.json")) as f:
        self.assertEqual(json.load(f)["step"], 3)
    rows = io.read_jsonl(os.path.join(workdir, "sweep.jsonl"))
    self.assertEqual([r["status"] for r in rows],
                     ["running", "running", "done", "done"])

    second = subprocess.run(cmd, capture_output=True, text=True, env=env,
                            cwd=REPO, timeout=600, check=False)
    self.assertEqual(second.returncode, 0, second.stderr[-3000:])
    self.assertIn("2 finished, 0 to run", second.stderr)
    # Nothing was rerun: the journal holds the two finished records.
    self.assertEqual([r["status"] for r in io.read_jsonl(
        os.path.join(workdir, "sweep.jsonl"))], ["done", "done"])


if __name__ == "__main__":
  absltest.main()
