"""A study stopped by SIGTERM / SIGINT, then rerun, on `configs/default.py:
runlocal` (one seed).

Each case stops a study at a chosen point (the signal is sent from a test
hook in this process, or to a launcher subprocess once a given log line
appears), checks the one line it ends with and what it kept, reruns the same
study and checks that every journal record (rows and per-example
correctness) and every saved model equal those of an uninterrupted run, bit
for bit.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from unittest import mock

from absl.testing import absltest

from configs import default
from robustjax import checkpoint
from robustjax import preemption
from robustjax.compress import saved
from robustjax.data import pipeline
from robustjax.robustness.evaluators import base
from robustjax.study import journal as journal_lib
from robustjax.study import evaluation
from robustjax.study import runner

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
# The line a stopped study ends with (robustjax/study/runner.py).
STOPPED = re.compile(
    r"^Stopped by (SIGTERM|SIGINT) while (building|evaluating) (.+?): "
    r"(\d+) of (\d+) cells are saved in (.+?)(, and the training in (.+?) "
    r"is checkpointed at step (\d+) of (\d+))?; rerun the same command to "
    r"resume\.$")


def _config():
  config = default.get_config("runlocal")
  with config.unlocked():
    config.study.seeds = 1
  return config


def _records(workdir):
  """Journal key -> (rows, arrays as stored): equal only if bit-identical."""
  journal = journal_lib.Journal(os.path.join(workdir, runner.JOURNAL))
  return {r["key"]: (r["rows"], r["arrays"]) for r in journal}


def _checksums(workdir):
  """Saved model folder -> the checksum of its variables."""
  root = os.path.join(workdir, "models")
  out = {}
  for name in sorted(os.listdir(root)):
    with open(os.path.join(root, name, saved.METADATA)) as f:
      out[name] = json.load(f)["checksum"]
  return out


def _signal_at_call(owner, name: str, call: int, signum):
  """Patches `owner.name` to send `signum` at the start of its call number
  `call` (1-based)."""
  real = getattr(owner, name)
  calls = []

  def hooked(*args, **kwargs):
    calls.append(1)
    if len(calls) == call:
      os.kill(os.getpid(), signum)
    return real(*args, **kwargs)
  return mock.patch.object(owner, name, hooked)


class PreemptionTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    cls.config = _config()
    cls.clean = os.path.join(cls.root, "clean")
    runner.run_study(cls.config, cls.clean)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def _rerun_and_compare(self, workdir, ran_before):
    """Reruns the study; checks it ran only the cells that were missing and
    that everything equals the uninterrupted run. Returns its log lines."""
    ran = []
    real = evaluation.record_cell

    def counting(journal, key, *args):
      ran.append(key)
      return real(journal, key, *args)
    with mock.patch.object(evaluation, "record_cell", counting), self.assertLogs(
        logger="absl", level="INFO") as logs:
      runner.run_study(self.config, workdir)
    clean = _records(self.clean)
    self.assertCountEqual(ran, set(clean) - set(ran_before))
    self.assertEqual(_records(workdir), clean)
    self.assertEqual(_checksums(workdir), _checksums(self.clean))
    return logs.output

  def test_sigterm_in_the_middle_of_a_training(self):
    workdir = os.path.join(self.root, "training")
    steps = self.config.num_train_steps
    # Step 5 of the second training: the first model's cells are saved.
    with self.assertRaises(preemption.Preempted) as cm:
      with _signal_at_call(pipeline.TrainBatches, "batch", steps + 5,
                           signal.SIGTERM):
        runner.run_study(self.config, workdir)
    self.assertEqual(cm.exception.exit_code, 143)
    match = STOPPED.match(cm.exception.message)
    self.assertIsNotNone(match, cm.exception.message)
    saved_before = _records(workdir)
    self.assertNotEmpty(saved_before)
    self.assertEqual(
        (match[1], match[2], int(match[4]), int(match[5]), match[6]),
        ("SIGTERM", "building", len(saved_before), len(_records(self.clean)),
         os.path.join(workdir, runner.JOURNAL)))
    training, step = match[8], int(match[9])
    self.assertEqual((step, int(match[10])), (5, steps))
    ckpt = checkpoint.Checkpointer(training)
    self.assertEqual(ckpt.latest_step(), 5)
    ckpt.close()
    self.assertFalse(saved.is_done(os.path.dirname(training)))
    # The partial report was flushed.
    with open(os.path.join(workdir, "report.md")) as f:
      self.assertIn(f"Partial: {len(saved_before)} of ", f.read())

    logs = self._rerun_and_compare(workdir, saved_before)
    self.assertTrue(any(
        f"Resuming from checkpoint at step 5 in {training}" in line
        for line in logs), "the training was not resumed mid-way")

  def test_sigint_in_the_middle_of_an_evaluation(self):
    workdir = os.path.join(self.root, "evaluation")
    with self.assertRaises(preemption.Preempted) as cm:
      with _signal_at_call(base, "run_batches", 12, signal.SIGINT):
        runner.run_study(self.config, workdir)
    self.assertEqual(cm.exception.exit_code, 130)
    match = STOPPED.match(cm.exception.message)
    self.assertIsNotNone(match, cm.exception.message)
    saved_before = _records(workdir)
    self.assertEqual((match[1], match[2], int(match[4]), match[7]),
                     ("SIGINT", "evaluating", len(saved_before), None))
    # The abandoned cell was not recorded.
    model_id, seed, cell = re.match(r"^(.+) \(seed (\d+)\) on (.+)$",
                                    match[3]).groups()
    key = runner.record_key(model_id, int(seed), cell)
    self.assertIn(key, _records(self.clean))
    self.assertNotIn(key, saved_before)
    self._rerun_and_compare(workdir, saved_before)

  def test_launcher_ends_with_one_line_and_status_143(self):
    workdir = os.path.join(self.root, "launcher")
    cmd = [sys.executable, os.path.join(REPO, "launch", "study.py"),
           "--config=" + os.path.join(REPO, "configs", "default.py") +
           ":runlocal", "--config.study.seeds=1", "--workdir=" + workdir,
           # XLA's default CPU settings, as this process's clean run.
           "--cpu_devices=0"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    lines = []
    try:
      for line in proc.stderr:
        lines.append(line)
        if " s0 corruption/gaussian_noise: " in line:
          proc.send_signal(signal.SIGTERM)
          break
      lines += proc.stderr.readlines()
    finally:
      proc.wait(timeout=300)
    stderr = "".join(lines)
    self.assertEqual(proc.returncode, 143, stderr[-3000:])
    stopped = [l for l in lines if l.startswith("Stopped by")]
    self.assertLen(stopped, 1, stderr[-3000:])
    match = STOPPED.match(stopped[0].rstrip("\n"))
    self.assertIsNotNone(match, stopped[0])
    self.assertNotIn("Traceback", stderr)
    saved_before = _records(workdir)
    self.assertEqual(int(match[4]), len(saved_before))
    self._rerun_and_compare(workdir, saved_before)


if __name__ == "__main__":
  absltest.main()
