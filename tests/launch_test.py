"""launch/train.py as a user runs it: a subprocess with a config file."""

import json
import os
import subprocess
import sys

from absl.testing import absltest

from robustjax import io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_launcher(*args):
  return subprocess.run(
      [sys.executable, os.path.join(ROOT, "launch", "train.py"), *args],
      capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)


class TrainLauncherTest(absltest.TestCase):

  def test_digits_runlocal(self):
    workdir = self.create_tempdir().full_path
    result = run_launcher("--config=configs/digits_resnet.py:runlocal",
                          f"--workdir={workdir}")
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertIn("Done: results in", result.stderr)
    final = json.load(open(os.path.join(workdir, "final_metrics.json")))
    self.assertEqual(final["step"], 8)  # runlocal: 8 steps.
    for key in ("test_accuracy", "target/uci_accuracy"):
      self.assertBetween(final[key], 0.0, 1.0)
    config = json.load(open(os.path.join(workdir, "config.json")))
    self.assertEqual(config["model"]["name"], "resnet20")
    self.assertEqual(config["dataset"]["max_train_examples"], 256)
    rows = io.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    self.assertEqual([r["step"] for r in rows if r["split"] == "eval"], [4, 8])
    self.assertIn("8", os.listdir(os.path.join(workdir, "checkpoints")))

  def test_required_flags(self):
    result = run_launcher("--config=configs/digits_resnet.py:runlocal")
    self.assertEqual(result.returncode, 1)
    self.assertIn("Flag --workdir must have a value", result.stderr)


if __name__ == "__main__":
  absltest.main()
