"""The launchers as a user runs them: subprocesses, console scripts."""

import ast
import json
import os
import subprocess
import sys
import tomllib

from absl.testing import absltest

from robustjax import cpu_setup
from robustjax import io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_launcher(*args, launcher="train.py"):
  return subprocess.run(
      [sys.executable, os.path.join(ROOT, "launch", launcher), *args],
      capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)


class TrainLauncherTest(absltest.TestCase):

  def test_digits_runlocal(self):
    workdir = self.create_tempdir().full_path
    result = run_launcher("--config=configs/digits_resnet.py:runlocal",
                          f"--workdir={workdir}")
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertIn("Done: results in", result.stderr)
    final = json.load(open(os.path.join(workdir, "final_metrics.json")))
    self.assertEqual(final["step"], 8)  # runlocal: 8 steps.
    rows = io.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    last_eval = [r for r in rows if r["split"] == "eval"][-1]
    for key in ("test_accuracy", "target/uci_accuracy"):
      self.assertEqual(final[key], last_eval[key])

    # launch/evaluate.py on the trained run: the clean cell is the final
    # test accuracy exactly (same model, same split); resumable by cell.
    args = ["--config=configs/digits_resnet.py:runlocal",
            f"--workdir={workdir}",
            "--config.evals.corruptions.names=('contrast',)",
            "--config.evals.corruptions.max_examples=32",
            "--config.evals.attacks.names=('fgsm',)",
            "--config.evals.attacks.eps=(0.0,0.1)",
            "--config.evals.attacks.max_examples=32"]
    ev = run_launcher(*args, launcher="evaluate.py")
    self.assertEqual(ev.returncode, 0, ev.stderr[-3000:])
    got = io.read_jsonl(os.path.join(workdir, "eval_results.jsonl"))
    clean = [r for r in got if r["shift"] == "clean"]
    self.assertEqual(clean[0]["accuracy"], final["test_accuracy"])
    self.assertEqual(len(got), 1 + 1 + 5 + 2)
    journal = os.path.join(workdir, "eval_journal.jsonl")
    lines = open(journal).read().splitlines(keepends=True)
    with open(journal, "w") as f:  # Half the cells and a torn line.
      f.writelines(lines[:2])
      f.write('{"key": "adv')
    again = run_launcher(*args, launcher="evaluate.py")
    self.assertEqual(again.returncode, 0, again.stderr[-3000:])
    self.assertIn(f"{len(lines) - 2} cells to run, 2 already done",
                  again.stderr)
    self.assertEqual(io.read_jsonl(os.path.join(workdir,
                                                "eval_results.jsonl")), got)
    config = json.load(open(os.path.join(workdir, "config.json")))
    self.assertEqual(config["model"]["name"], "resnet20")
    self.assertEqual(config["dataset"]["max_train_examples"], 256)
    self.assertEqual([r["step"] for r in rows if r["split"] == "eval"], [4, 8])
    self.assertIn("8", os.listdir(os.path.join(workdir, "checkpoints")))
    log = open(os.path.join(workdir, "log.txt")).read()  # The run's log.
    self.assertIn("starts logging to", log)
    # On a machine where it helps, the launcher restarted itself with
    # another allocator for XLA:CPU's buffers (--cpu_malloc) and says which.
    restart = cpu_setup.cpu_malloc_environ()
    self.assertIn(f"malloc: {cpu_setup.cpu_malloc_in_use(restart)}.", log)
    self.assertIn("Done: results in", log)

  def test_required_flags(self):
    result = run_launcher("--config=configs/digits_resnet.py:runlocal")
    self.assertEqual(result.returncode, 1)
    self.assertIn("Flag --workdir must have a value", result.stderr)


def _rows(model_id, method, clean):
  base = dict(model_id=model_id, arch="resnet8:16", method=method,
              setting={}, size_bits=1e6, sparsity=0.0, original_id=None,
              n=100)
  return [dict(base, shift="clean", name="source", level=None,
               accuracy=clean),
          dict(base, shift="corruption", name="fog", level=1,
               accuracy=clean / 2)]


class ReportLauncherTest(absltest.TestCase):

  def _partial_workdir(self):
    workdir = self.create_tempdir().full_path
    io.append_jsonl(os.path.join(workdir, "results.jsonl"),
                    _rows("m/original", "original", 0.9))
    io.write_json(os.path.join(workdir, "progress.json"), {"cells_total": 6})
    return workdir

  def test_renders_a_partial_workdir(self):
    workdir = self._partial_workdir()
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "launch", "report.py"),
         f"--workdir={workdir}", "--print"],
        capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertIn("Partial: 2 of 6 cells", result.stderr)
    self.assertIn("**Partial: 2 of 6 cells (33 %).**", result.stdout)
    for name in ("report.md", "results.csv"):
      self.assertTrue(os.path.exists(os.path.join(workdir, name)), name)

  def test_empty_workdir(self):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "launch", "report.py"),
         f"--workdir={self.create_tempdir().full_path}"],
        capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    self.assertEqual(result.returncode, 1)
    self.assertIn("No result rows in", result.stderr)


class ConsoleScriptsTest(absltest.TestCase):

  def test_every_script_names_a_run_function(self):
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
      scripts = tomllib.load(f)["project"]["scripts"]
    self.assertContainsSubset(
        {f"robustjax-{n}" for n in ("study", "train", "compress", "evaluate",
                                    "sweep", "report")}, set(scripts))
    for script, target in scripts.items():
      module, function = target.split(":")
      path = os.path.join(ROOT, *module.split(".")) + ".py"
      tree = ast.parse(open(path).read())
      # A function, or one made by launch_common.entry_point.
      names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
      names |= {t.id for n in tree.body if isinstance(n, ast.Assign)
                for t in n.targets if isinstance(t, ast.Name)}
      self.assertIn(function, names, f"{script} -> {target}")

  def test_installed_script_runs(self):
    script = os.path.join(os.path.dirname(sys.executable), "robustjax-report")
    if not os.path.exists(script):
      self.skipTest("robustjax is not installed in this interpreter's "
                    "environment (pip install -e .): no console scripts.")
    result = subprocess.run(
        [script, f"--workdir={self.create_tempdir().full_path}"],
        capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    self.assertEqual(result.returncode, 1)  # Empty workdir: a clear error.
    self.assertIn("No result rows in", result.stderr)


if __name__ == "__main__":
  absltest.main()
