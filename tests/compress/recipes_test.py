"""End-to-end test of launch/compress.py and robustjax.compress.recipes.

Runs the launcher on the runlocal digits config with a tiny ResNet-8 (a few
steps per model), reruns it (everything is skipped), and reloads every saved
model through `saved.load`. Run:

  python -m pytest tests/compress/recipes_test.py
"""

import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np

from configs import digits_compress
from robustjax.compress import saved
from robustjax.data import loader
from robustjax.robustness import evaluators
from robustjax.study import runner

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
ARGS = "runlocal,model=resnet8,width=4"


def _launch(workdir):
  cmd = [sys.executable, os.path.join(ROOT, "launch", "compress.py"),
         f"--config={os.path.join(ROOT, 'configs', 'digits_compress.py')}:"
         f"{ARGS}", f"--workdir={workdir}"]
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                        check=False)
  if proc.returncode:
    raise AssertionError(proc.stderr[-4000:])


class LaunchTest(absltest.TestCase):

  def test_end_to_end_resumable_and_reloadable(self):
    with tempfile.TemporaryDirectory() as workdir:
      _launch(workdir)
      rows = runner.load_results(workdir)
      self.assertEqual({r["shift"] for r in rows}, {"clean", "domain"})
      meta = {}
      for r in rows:
        folder = os.path.join(workdir, "models", r["model_id"].replace(
            "/", "__") + f"__s{r['seed']}")
        meta[r["model_id"]] = (folder, r)
      self.assertEqual(set(meta), {
          "resnet8-w4/original", "resnet8-w4/prune-global-s0.9",
          "resnet8-w4/prune-global-gradual-s0.9",
          "resnet8-w4/prune-channels-s0.5", "resnet8-w4/ptq-w8a8",
          "resnet8-w4/ptq-w4a8", "resnet8-w4/prune-global-s0.9-ptq-w8a8",
          "resnet8-w4/distill-from-resnet8-w4-T4-a0.9",
          "resnet8-w4/distill-control"})
      models = {k: saved.load(f) for k, (f, _) in meta.items()}
      size = {k: m.metadata["size_bits"] for k, m in models.items()}
      orig = models["resnet8-w4/original"].metadata
      self.assertEqual(orig["compression_ratio"], 1.0)
      pruned = models["resnet8-w4/prune-global-s0.9"].metadata
      self.assertAlmostEqual(pruned["prunable_sparsity"], 0.9, places=3)
      self.assertLess(pruned["size_bits"], orig["size_bits"] / 3)
      for name, ratio in (("ptq-w8a8", 3.0), ("ptq-w4a8", 4.5)):
        m = models[f"resnet8-w4/{name}"].metadata
        self.assertGreater(m["compression_ratio"], ratio)
        self.assertEqual(m["quantization"]["act_bits"], 8)
      self.assertLess(size["resnet8-w4/prune-global-s0.9-ptq-w8a8"],
                      size["resnet8-w4/prune-global-s0.9"])
      self.assertEqual(models["resnet8-w4/distill-control"].metadata[
          "method"], "distill_control")

      # A rerun skips every finished model and cell.
      mtimes = {k: os.path.getmtime(os.path.join(f, saved.METADATA))
                for k, (f, _) in meta.items()}
      _launch(workdir)
      self.assertEqual(runner.load_results(workdir), rows)
      for k, (f, _) in meta.items():
        self.assertEqual(os.path.getmtime(os.path.join(f, saved.METADATA)),
                         mtimes[k])

      # Every model reloads through the one calling convention and gives
      # the recorded clean accuracy.
      config = digits_compress.get_config(ARGS)
      _, evals = loader.load_data(config)
      for name in ("resnet8-w4/prune-global-s0.9", "resnet8-w4/ptq-w4a8",
                   "resnet8-w4/distill-from-resnet8-w4-T4-a0.9"):
        m = models[name]
        clean = [r for r in rows if r["model_id"] == name and
                 r["shift"] == "clean"][0]
        self.assertEqual(evaluators.accuracy(m.apply_fn, m.variables,
                                             evals["test"], 500),
                         clean["accuracy"])
        logits = m.apply_fn(m.variables, np.zeros((2, 16, 16, 1),
                                                  np.float32))
        self.assertEqual(logits.shape, (2, 10))

  def test_missing_training_checkpoint(self):
    with tempfile.TemporaryDirectory() as workdir:
      with self.assertRaisesRegex(FileNotFoundError, "Train the model"):
        saved.restore_trained(workdir)


if __name__ == "__main__":
  absltest.main()
