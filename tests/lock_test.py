"""Tests for robustjax.lock: one writer per workdir, locally and in a bucket.

The end-to-end case (two study launchers on one workdir) is in
tests/study/runner_recovery_test.py.
"""

import json
import os
import socket
import subprocess
import sys
import time
from unittest import mock

from absl.testing import absltest

from robustjax import lock
from tests import fake_bucket

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class LocalLockTest(absltest.TestCase):

  def test_second_holder_is_refused_with_the_first_named(self):
    workdir = os.path.join(self.create_tempdir().full_path, "run")
    with lock.hold(workdir, "study") as held:
      self.assertIsNotNone(held)
      record = json.load(open(os.path.join(workdir, lock.LOCK_FILE)))
      self.assertEqual((record["host"], record["pid"], record["what"]),
                       (socket.gethostname(), os.getpid(), "study"))
      self.assertEqual(lock.holder(workdir)["pid"], os.getpid())
      # Another open file description: what a second process gets.
      with self.assertRaises(lock.WorkdirLockedError) as cm:
        lock.Lock(workdir, "training").acquire()
      message = str(cm.exception)
      self.assertIn(f"Workdir {workdir} is in use by another study run "
                    f"(host {socket.gethostname()}, PID {os.getpid()}, "
                    f"since {record['since']}", message)
      self.assertIn(f"kill {os.getpid()} on {socket.gethostname()}", message)
      self.assertNotIn("\n", message)
      self.assertEqual(cm.exception.holder["pid"], os.getpid())
    self.assertEqual(lock.holder(workdir), {})  # Released.
    lock.Lock(workdir).acquire().release()

  def test_nested_holds_of_a_folder_and_its_subfolders_take_nothing(self):
    workdir = os.path.join(self.create_tempdir().full_path, "run")
    with lock.hold(workdir, "study"):
      with lock.hold(workdir) as again, lock.hold(
          os.path.join(workdir, "models", "m", "train")) as below:
        self.assertIsNone(again)
        self.assertIsNone(below)
      self.assertFalse(os.path.exists(
          os.path.join(workdir, "models", "m", "train", lock.LOCK_FILE)))
      with lock.hold(workdir + "-other") as sibling:  # Not below: its own.
        self.assertIsNotNone(sibling)
      # Still held after the nested blocks ended.
      with self.assertRaises(lock.WorkdirLockedError):
        lock.Lock(workdir).acquire()

  def test_a_killed_holder_leaves_no_stale_lock(self):
    workdir = os.path.join(self.create_tempdir().full_path, "run")
    os.makedirs(workdir)
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], "
            "os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); "
            "os.write(fd, b'{\"host\": \"h\", \"pid\": 1}'); print('held', "
            "flush=True); time.sleep(600)")
    proc = subprocess.Popen(
        [sys.executable, "-c", code, os.path.join(workdir, lock.LOCK_FILE)],
        stdout=subprocess.PIPE, text=True)
    try:
      self.assertEqual(proc.stdout.readline().strip(), "held")
      with self.assertRaises(lock.WorkdirLockedError):
        lock.Lock(workdir).acquire()
    finally:
      proc.kill()
      proc.wait()
      proc.stdout.close()
    lock.Lock(workdir).acquire().release()  # The kernel dropped it.


class LeaseTest(absltest.TestCase):
  """The lease of a `gs://` workdir (tests/fake_bucket.py)."""

  def setUp(self):
    super().setUp()
    self.enter_context(mock.patch.object(lock, "LEASE_SETTLE_S", 0.0))
    self.root = self.create_tempdir().full_path

  def test_lease_refuses_a_second_run_and_is_removed_on_release(self):
    url = "gs://b/runs/study"
    with fake_bucket.fake_gcs(self.root):
      with lock.hold(url, "study"):
        lease = fake_bucket.local_path(url + "/" + lock.LEASE_FILE, self.root)
        self.assertEqual(json.load(open(lease))["pid"], os.getpid())
        with self.assertRaisesRegex(lock.WorkdirLockedError,
                                    f"PID {os.getpid()}"):
          lock.Lock(url).acquire()
        self.assertEqual(lock.holder(url)["pid"], os.getpid())
      self.assertFalse(os.path.exists(lease))

  def test_a_stale_lease_is_taken_over(self):
    url = "gs://b/runs/study"
    with fake_bucket.fake_gcs(self.root):
      lease = fake_bucket.local_path(url + "/" + lock.LEASE_FILE, self.root)
      os.makedirs(os.path.dirname(lease))
      with open(lease, "w") as f:
        json.dump({"host": "gone", "pid": 7, "since": "earlier",
                   "heartbeat": time.time() - lock.LEASE_STALE_S - 1}, f)
      with self.assertLogs(level="WARNING") as logs:
        held = lock.Lock(url).acquire()
      self.assertIn("stale lease", logs.output[0])
      self.assertIn("host gone, PID 7", logs.output[0])
      self.assertEqual(json.load(open(lease))["pid"], os.getpid())
      held.release()

  def test_a_lease_overwritten_while_settling_refuses(self):
    url = "gs://b/runs/study"
    with fake_bucket.fake_gcs(self.root):
      lease = fake_bucket.local_path(url + "/" + lock.LEASE_FILE, self.root)
      other = {"host": "other", "pid": 9, "since": "now", "token": "x",
               "heartbeat": time.time()}

      def race(_):  # Another run writes its lease meanwhile.
        with open(lease, "w") as f:
          json.dump(other, f)
      with mock.patch.object(lock.time, "sleep", race):
        with self.assertRaisesRegex(lock.WorkdirLockedError,
                                    "host other, PID 9"):
          lock.Lock(url).acquire()


if __name__ == "__main__":
  absltest.main()
