"""End-to-end test of launch/compress.py and robustjax.compress.methods.

Runs the launcher on the runlocal digits config with a tiny ResNet-8 (a few
steps per model), reruns it (everything is skipped), and reloads every model
of the manifest through `load_compressed`. Run:

  python -m pytest tests/compress/methods_test.py
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from absl.testing import absltest
import numpy as np

from configs import digits_compress
from robustjax.compress import methods
from robustjax.train import trainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
ARGS = "runlocal,model=resnet8,width=4"


def _launch(workdir):
  cmd = [sys.executable, os.path.join(ROOT, "launch", "compress.py"),
         f"--config={os.path.join(ROOT, 'configs', 'digits_compress.py')}:"
         f"{ARGS}", f"--workdir={workdir}"]
  t0 = time.time()
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                        check=False)
  if proc.returncode:
    raise AssertionError(proc.stderr[-4000:])
  return time.time() - t0


class LaunchTest(absltest.TestCase):

  def test_end_to_end_resumable_and_reloadable(self):
    with tempfile.TemporaryDirectory() as workdir:
      _launch(workdir)
      with open(os.path.join(workdir, methods.MANIFEST)) as f:
        manifest = json.load(f)
      models = {m["name"]: m for m in manifest["models"]}
      self.assertEqual(set(models), {
          "original",
          "prune/global-unstructured-oneshot-s0.90",
          "prune/layerwise-channel-gradual-s0.50",
          "kd/resnet8-w4-T4-a0.9", "kd/resnet8-w4-control",
          "ptq/w8a8", "ptq/w4a8",
          "ptq_pruned/global-unstructured-oneshot-s0.90-w8a8"})
      for m in models.values():
        for key in ("method", "setting", "path", "size_bits", "sparsity",
                    "accuracy", "compression_ratio"):
          self.assertIn(key, m)
        self.assertTrue(os.path.isdir(os.path.join(m["path"], "variables")))
        self.assertEqual(set(m["accuracy"]), {"test", "target/uci"})
      orig = models["original"]
      self.assertEqual(orig["compression_ratio"], 1.0)
      pruned = models["prune/global-unstructured-oneshot-s0.90"]
      self.assertAlmostEqual(pruned["prunable_sparsity"], 0.9, places=3)
      self.assertLess(pruned["size_bits"], orig["size_bits"] / 3)
      for name, ratio in (("ptq/w8a8", 3.0), ("ptq/w4a8", 4.5)):
        self.assertGreater(models[name]["compression_ratio"], ratio)
        self.assertEqual(models[name]["quantization"]["act_bits"], 8)
      combo = models["ptq_pruned/global-unstructured-oneshot-s0.90-w8a8"]
      self.assertLess(combo["size_bits"], pruned["size_bits"])
      self.assertEqual(models["kd/resnet8-w4-control"]["method"],
                       "kd_control")
      self.assertTrue(os.path.exists(os.path.join(workdir, "base",
                                                  "final_metrics.json")))

      # A rerun skips every finished model and rewrites the same manifest.
      mtimes = {n: os.path.getmtime(os.path.join(m["path"],
                                                 methods.METADATA))
                for n, m in models.items()}
      _launch(workdir)
      with open(os.path.join(workdir, methods.MANIFEST)) as f:
        again = {m["name"]: m for m in json.load(f)["models"]}
      self.assertEqual(again, models)
      for n, m in models.items():
        self.assertEqual(os.path.getmtime(
            os.path.join(m["path"], methods.METADATA)), mtimes[n])

      # Every model reloads through the one calling convention and gives
      # the accuracy recorded in the manifest.
      config = digits_compress.get_config(ARGS)
      data = trainer.load_data(config)
      for name in ("prune/global-unstructured-oneshot-s0.90", "ptq/w4a8",
                   "kd/resnet8-w4-T4-a0.9"):
        apply_fn, variables, meta = methods.load_compressed(
            models[name]["path"])
        self.assertEqual(meta["name"], name)
        acc = methods.evaluate(apply_fn, variables, config, data)
        for k, v in acc.items():
          self.assertAlmostEqual(v, models[name]["accuracy"][k], places=6)
        logits = apply_fn(variables, np.zeros((2, 16, 16, 1), np.float32))
        self.assertEqual(logits.shape, (2, 10))

  def test_bad_prune_run(self):
    with self.assertRaisesRegex(ValueError, "scope:structure"):
      methods.parse_prune_run("global:0.9")
    with self.assertRaisesRegex(ValueError, "unknown schedule"):
      methods.parse_prune_run("global:unstructured:cubic:0.9")

  def test_missing_base_checkpoint(self):
    with tempfile.TemporaryDirectory() as workdir:
      with self.assertRaisesRegex(FileNotFoundError, "Train the base"):
        methods.restore_trained(workdir)


if __name__ == "__main__":
  absltest.main()
