"""Resuming training: from a checkpoint, with more steps, and after SIGKILL.

The data order and augmentation are functions of (seed, step), so a resumed
run must end with exactly the parameters of an uninterrupted one. Runs use
the digits smoke config with a constant learning rate (a cosine schedule
depends on the total number of steps, so "re-run with more steps" would
legitimately change the result).
"""

import json
import os
import signal
import subprocess
import sys
import time

from absl.testing import absltest
import jax
import numpy as np

from configs import digits_resnet
from robustjax import io
from robustjax import train
from robustjax import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def smoke_config(num_train_steps):
  """The digits smoke run: ResNet-8 width 4, 256 examples, constant lr."""
  c = digits_resnet.get_config("runlocal,model=resnet8,width=4")
  c.optimizer.schedule = "constant"
  c.num_train_steps = num_train_steps
  c.log_every_steps = 2
  c.eval_every_steps = 1000
  c.checkpoint_every_steps = 4
  return c


def _restore(workdir, like):
  ckpt = checkpoint.Checkpointer(workdir)
  try:
    return ckpt.latest_step(), ckpt.restore(checkpoint.abstract(like))
  finally:
    ckpt.close()


class ResumeTest(absltest.TestCase):

  def assert_same_state(self, a, b):
    self.assertEqual(jax.tree.structure(a), jax.tree.structure(b))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(x, y)  # Bitwise.

  def test_more_steps_continue_from_the_checkpoint(self):
    reference = train.train_and_evaluate(smoke_config(12),
                                         self.create_tempdir().full_path)
    workdir = self.create_tempdir().full_path
    first = train.train_and_evaluate(smoke_config(8), workdir)
    self.assertEqual(int(first.step), 8)
    with self.assertLogs(logger="absl", level="INFO") as logs:
      resumed = train.train_and_evaluate(smoke_config(12), workdir)
    self.assertTrue(any("Resuming from checkpoint at step 8" in line
                        for line in logs.output), logs.output)
    self.assertTrue(any("from step 8." in line for line in logs.output))
    self.assertEqual(int(resumed.step), 12)
    self.assert_same_state(resumed, reference)
    # The run record continues: train lines 2..12, each step once.
    rows = io.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    self.assertEqual([r["step"] for r in rows if r["split"] == "train"],
                     list(range(2, 13, 2)))
    self.assertEqual([r["step"] for r in rows if r["split"] == "eval"],
                     [8, 12])
    final = json.load(open(os.path.join(workdir, "final_metrics.json")))
    self.assertEqual(final["step"], 12)

  def test_finished_run_is_not_retrained(self):
    workdir = self.create_tempdir().full_path
    done = train.train_and_evaluate(smoke_config(4), workdir)
    rows_before = io.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    again = train.train_and_evaluate(smoke_config(4), workdir)
    self.assert_same_state(again, done)
    rows = io.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    # Only one more evaluation line; no training line.
    self.assertEqual(rows[:len(rows_before)], rows_before)
    self.assertEqual([r["split"] for r in rows[len(rows_before):]], ["eval"])


class KillTest(absltest.TestCase):
  """launch/train.py killed with SIGKILL mid-run, then re-run."""

  STEPS = 60

  def _command(self, workdir):
    return [sys.executable, os.path.join(ROOT, "launch", "train.py"),
            "--config=" + os.path.join(ROOT, "configs", "digits_resnet.py")
            + ":runlocal,model=resnet8,width=4",
            f"--workdir={workdir}",
            # The in-process reference below runs on XLA's default CPU
            # settings; the launcher's (one device + the YNNPACK flag) give
            # different float rounding, which 60 steps amplify.
            "--cpu_devices=0",
            "--config.optimizer.schedule=constant",
            f"--config.num_train_steps={self.STEPS}",
            "--config.log_every_steps=2",
            "--config.eval_every_steps=1000",
            "--config.checkpoint_every_steps=4"]

  def test_sigkill_then_rerun(self):
    workdir = self.create_tempdir().full_path
    first_checkpoint = os.path.join(workdir, "checkpoints", "4")
    with open(os.path.join(workdir, "run1.log"), "w") as log:
      proc = subprocess.Popen(self._command(workdir), stdout=log,
                              stderr=subprocess.STDOUT, cwd=ROOT)
      deadline = time.time() + 240
      while not os.path.isdir(first_checkpoint) and proc.poll() is None:
        self.assertLess(time.time(), deadline, "No checkpoint appeared.")
        time.sleep(0.01)
      proc.send_signal(signal.SIGKILL)
      proc.wait()
    run1 = open(os.path.join(workdir, "run1.log")).read()
    self.assertEqual(proc.returncode, -signal.SIGKILL, run1[-3000:])
    self.assertFalse(
        os.path.exists(os.path.join(workdir, "final_metrics.json")),
        "The run finished before it was killed: the test proves nothing.")

    result = subprocess.run(self._command(workdir), capture_output=True,
                            text=True, cwd=ROOT, timeout=240, check=False)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    resumed_at = [int(line.split("Resuming from checkpoint at step ")[1]
                      .split(" ")[0]) for line in result.stderr.splitlines()
                  if "Resuming from checkpoint at step " in line]
    self.assertLen(resumed_at, 1, result.stderr[-3000:])
    self.assertGreaterEqual(resumed_at[0], 4)
    self.assertEqual(resumed_at[0] % 4, 0)

    # Nothing corrupted: the results, the run record and the checkpoint.
    final = json.load(open(os.path.join(workdir, "final_metrics.json")))
    self.assertEqual(final["step"], self.STEPS)
    rows = io.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    train_steps = [r["step"] for r in rows if r["split"] == "train"]
    self.assertEqual(train_steps[-1], self.STEPS)
    self.assertContainsSubset(range(resumed_at[0] + 2, self.STEPS + 1, 2),
                              train_steps)
    reference = train.train_and_evaluate(smoke_config(self.STEPS),
                                         self.create_tempdir().full_path)
    step, restored = _restore(workdir, reference)
    self.assertEqual(step, self.STEPS)
    for x, y in zip(jax.tree.leaves(restored), jax.tree.leaves(reference)):
      np.testing.assert_array_equal(x, y)


if __name__ == "__main__":
  absltest.main()
