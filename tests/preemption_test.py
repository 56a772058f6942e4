"""robustjax.preemption: SIGTERM / SIGINT under a guard, deferred blocks, and
the launchers' one line and exit status for a stopped run."""

import contextlib
import io as stdio
import os
import signal
import threading
from unittest import mock

from absl.testing import absltest

from launch import common as launch_common
from robustjax import preemption


def _send(signum):
  """Delivers `signum` to this process; its handler runs before returning."""
  os.kill(os.getpid(), signum)
  for _ in range(1000):  # Python runs handlers at the next bytecode.
    pass


class PreemptionTest(absltest.TestCase):

  def test_a_signal_outside_deferred_blocks_raises_at_once(self):
    ran_on = []
    with self.assertRaises(preemption.Preempted) as cm:
      with preemption.guard():
        _send(signal.SIGTERM)
        ran_on.append("after the signal")
    self.assertEqual(ran_on, [])
    self.assertEqual((cm.exception.signum, cm.exception.exit_code,
                      cm.exception.signal_name), (signal.SIGTERM, 143,
                                                  "SIGTERM"))
    self.assertEqual(cm.exception.message, "Stopped by SIGTERM.")

  def test_deferred_block_reaches_its_safe_point(self):
    steps = []
    with self.assertRaises(preemption.Preempted) as cm:
      with preemption.guard():
        with preemption.deferred():
          for step in range(5):
            if step == 2:
              _send(signal.SIGINT)
            steps.append(step)
            if preemption.requested():
              break
        self.assertEqual(steps, [0, 1, 2])  # Step 2 was finished.
        preemption.check()
        steps.append("not reached")
    self.assertEqual(steps, [0, 1, 2])
    self.assertEqual(cm.exception.exit_code, 130)

  def test_second_signal_raises_inside_a_deferred_block(self):
    with self.assertRaises(preemption.Preempted):
      with preemption.guard(), preemption.deferred():
        _send(signal.SIGTERM)
        self.assertEqual(preemption.requested(), signal.SIGTERM)
        _send(signal.SIGTERM)
        self.fail("the second signal did not raise")

  def test_guard_restores_the_handlers_and_forgets_the_signal(self):
    before = signal.getsignal(signal.SIGTERM)
    with self.assertRaises(preemption.Preempted):
      with preemption.guard():
        with preemption.guard():  # Nested: shares the outer one.
          _send(signal.SIGTERM)
    self.assertIs(signal.getsignal(signal.SIGTERM), before)
    self.assertIsNone(preemption.requested())
    preemption.check()  # Nothing pending.

  def test_without_a_guard_nothing_changes(self):
    with preemption.deferred():
      self.assertIsNone(preemption.requested())
    with mock.patch.object(signal, "signal") as install:
      thread = threading.Thread(target=lambda: preemption.guard().__enter__())
      thread.start()
      thread.join()
    install.assert_not_called()  # Not the main thread: no handlers.

  def test_launcher_prints_one_line_and_exits_with_the_signal_status(self):
    stderr = stdio.StringIO()
    for signum, status in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
      with self.assertRaises(SystemExit) as cm, contextlib.redirect_stderr(
          stderr):
        with launch_common.fatal_errors("/w"):
          raise preemption.Preempted(
              signum, "Stopped by X: 3 of 9 cells are saved in\n/w; rerun.")
      self.assertEqual(cm.exception.code, status)
    self.assertEqual(stderr.getvalue().splitlines(),
                     ["Stopped by X: 3 of 9 cells are saved in /w; rerun."] * 2)


if __name__ == "__main__":
  absltest.main()
