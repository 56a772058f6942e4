"""launch/train.py as a user runs it: a subprocess with a config file."""

import json
import os
import subprocess
import sys

from absl.testing import absltest

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

  def test_required_flags(self):
    result = run_launcher("--config=configs/digits_resnet.py:runlocal")
    self.assertEqual(result.returncode, 1)
    self.assertIn("Flag --workdir must have a value", result.stderr)


if __name__ == "__main__":
  absltest.main()
