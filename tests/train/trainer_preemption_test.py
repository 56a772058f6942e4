"""The trainer's time-based checkpoints and its stop on SIGTERM / SIGINT.

Runs use the digits smoke config with step checkpoints off
(`checkpoint_every_steps = 0`, as a study's trainings): only
`checkpoint_every_secs` and a signal under a `robustjax.preemption` guard
write checkpoints. A run stopped mid-way and rerun must end with exactly
the state of an uninterrupted one.
"""

import os
import signal
from unittest import mock

from absl.testing import absltest
import jax
import numpy as np

from configs import digits_resnet
from robustjax import checkpoint
from robustjax import preemption
from robustjax import train
from robustjax.data import pipeline

STEPS = 8


def smoke_config(every_secs):
  c = digits_resnet.get_config("runlocal,model=resnet8,width=4")
  c.num_train_steps = STEPS
  c.log_every_steps = 2
  c.eval_every_steps = -2
  c.checkpoint_every_steps = 0
  c.checkpoint_every_secs = every_secs
  return c


def _steps(workdir):
  ckpt = checkpoint.Checkpointer(workdir)
  try:
    return sorted(ckpt._manager.all_steps())  # pylint: disable=protected-access
  finally:
    ckpt.close()


def _signal_at(call: int, signum):
  """Patches the training batches to send `signum` while fetching the
  batch of step `call` (1-based): that step still runs."""
  real = pipeline.TrainBatches.batch
  calls = []

  def batch(self, i):
    calls.append(i)
    if len(calls) == call:
      os.kill(os.getpid(), signum)
    return real(self, i)
  return mock.patch.object(pipeline.TrainBatches, "batch", batch)


class TrainerPreemptionTest(absltest.TestCase):

  def assert_same_state(self, a, b):
    self.assertEqual(jax.tree.structure(a), jax.tree.structure(b))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(x, y)  # Bitwise.

  def test_time_based_checkpoints(self):
    # Due after every step; none after the last (the caller has the final
    # state), and step checkpoints are off.
    workdir = self.create_tempdir().full_path
    train.train_and_evaluate(smoke_config(1e-9), workdir)
    self.assertEqual(_steps(workdir), [STEPS - 2, STEPS - 1])  # Keep 2.
    workdir = self.create_tempdir().full_path
    train.train_and_evaluate(smoke_config(3600.0), workdir)
    self.assertEqual(_steps(workdir), [])

  def test_sigterm_checkpoints_the_step_and_a_rerun_ends_bit_identical(self):
    reference = train.train_and_evaluate(smoke_config(600.0),
                                         self.create_tempdir().full_path)
    workdir = self.create_tempdir().full_path
    with self.assertRaises(preemption.Preempted) as cm:
      with preemption.guard(), _signal_at(3, signal.SIGTERM):
        train.train_and_evaluate(smoke_config(600.0), workdir)
    self.assertEqual(cm.exception.signum, signal.SIGTERM)
    self.assertEqual(cm.exception.detail, f"the training in {workdir} is "
                     f"checkpointed at step 3 of {STEPS}")
    self.assertEqual(_steps(workdir), [3])
    with self.assertLogs(logger="absl", level="INFO") as logs:
      resumed = train.train_and_evaluate(smoke_config(600.0), workdir)
    self.assertTrue(any("Resuming from checkpoint at step 3" in line
                        for line in logs.output), logs.output)
    self.assert_same_state(resumed, reference)

  def test_sigint_without_checkpoints_says_the_training_restarts(self):
    workdir = self.create_tempdir().full_path
    with self.assertRaises(preemption.Preempted) as cm:
      with preemption.guard(), _signal_at(2, signal.SIGINT):
        train.train_and_evaluate(smoke_config(0), workdir)
    self.assertEqual(cm.exception.exit_code, 130)
    self.assertIn("stopped at step 2 of 8 with no checkpoint",
                  cm.exception.detail)
    self.assertEqual(_steps(workdir), [])


if __name__ == "__main__":
  absltest.main()
