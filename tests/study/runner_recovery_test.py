"""The study runner under faults, on `configs/default.py:runlocal`.

Each case starts from a copy of one clean run, injects a fault a user met
(a second launcher on the same workdir, damaged journal records, damaged
saved models, a full disk), reruns, and checks that the fault is named and
that the final results equal the clean run's.
"""

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from unittest import mock

from absl.testing import absltest

from configs import default
from robustjax import io
from robustjax import lock
from robustjax.compress import saved
from robustjax.study import journal as journal_lib
from robustjax.study import evaluation
from robustjax.study import runner

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))


def _by_key(rows):
  return {(r["model_id"], r["seed"], r["shift"], r["name"], r["level"]):
          r["accuracy"] for r in rows}


class RecoveryTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    cls.config = default.get_config("runlocal")
    cls.workdir = os.path.join(cls.root, "clean")
    cls.rows = runner.run_study(cls.config, cls.workdir)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def _copy(self, name):
    workdir = os.path.join(self.root, name)
    shutil.copytree(self.workdir, workdir)
    return workdir

  def _rerun_counting(self, workdir):
    """Reruns the study; returns (rows, keys of the cells it ran)."""
    calls = []
    original = evaluation.record_cell

    def counting(journal, key, *args):
      calls.append(key)
      return original(journal, key, *args)
    with mock.patch.object(evaluation, "record_cell", counting):
      rows = runner.run_study(self.config, workdir)
    return rows, calls

  def test_two_launchers_on_one_workdir(self):
    workdir = os.path.join(self.root, "two")
    cmd = [sys.executable, os.path.join(REPO, "launch", "study.py"),
           "--config=" + os.path.join(REPO, "configs", "default.py") +
           ":runlocal", "--workdir=" + workdir, "--cpu_devices=0"]
    first = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
      deadline = time.time() + 300
      while not lock.holder(workdir) and time.time() < deadline:
        self.assertIsNone(first.poll(), "the first run ended early")
        time.sleep(0.2)
      self.assertEqual(lock.holder(workdir)["pid"], first.pid)
      t = time.time()
      second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                              timeout=300)
      refused_in = time.time() - t
      self.assertIsNone(first.poll(), "the first run ended before the "
                        "second was refused: nothing was tested")
    finally:
      _, stderr = first.communicate(timeout=900)
    self.assertEqual(first.returncode, 0, stderr[-3000:])
    self.assertEqual(second.returncode, 1, second.stderr[-3000:])
    fatal = [l for l in second.stderr.splitlines() if l.startswith("FATAL")]
    self.assertLen(fatal, 1, second.stderr[-3000:])
    self.assertIn(f"Workdir {workdir} is in use by another study run (host ",
                  fatal[0])
    self.assertIn(f"PID {first.pid}, since ", fatal[0])
    self.assertNotIn("Traceback", second.stderr)
    self.assertLess(refused_in, 120)  # Refused before any work started.
    # The refused run wrote nothing into the first one's log.
    log = open(os.path.join(workdir, "log.txt")).read()
    self.assertEqual(log.count("starts logging to"), 1)
    self.assertEqual(_by_key(runner.load_results(workdir)),
                     _by_key(self.rows))
    self.assertLen(io.read_jsonl(os.path.join(workdir, runner.JOURNAL)),
                   len(journal_lib.Journal(
                       os.path.join(self.workdir, runner.JOURNAL))))

  def test_damaged_middle_journal_records_are_moved_aside_and_redone(self):
    workdir = self._copy("journal")
    path = os.path.join(workdir, runner.JOURNAL)
    lines = open(path).read().splitlines(keepends=True)
    no_shape = json.loads(lines[10])
    del no_shape["arrays"]["shape"]  # Still JSON: a field lost.
    lines[10] = json.dumps(no_shape, sort_keys=True) + "\n"
    keys = [no_shape["key"], json.loads(lines[20])["key"]]
    lines[20] = "#" + lines[20][1:]  # Not JSON any more.
    with open(path, "w") as f:
      f.writelines(lines)
    # A stale results.jsonl from before the damage: regenerated.
    with self.assertLogs(level="WARNING") as logs:
      rows, ran = self._rerun_counting(workdir)
    text = "\n".join(logs.output)
    self.assertIn(f"line 11 (cell {keys[0]}) is damaged (no 'shape' array)",
                  text)
    self.assertIn(f"line 21 (cell {keys[1]}) is damaged (not valid JSON)",
                  text)
    self.assertCountEqual(ran, keys)
    moved = io.read_jsonl(os.path.join(workdir, "journal.damaged.jsonl"))
    self.assertEqual([m["cell"] for m in moved], keys)
    self.assertEqual(moved[1]["text"], lines[20].rstrip("\n"))
    self.assertEqual(_by_key(rows), _by_key(self.rows))
    self.assertEqual(_by_key(io.read_jsonl(os.path.join(
        workdir, runner.RESULTS))), _by_key(self.rows))
    again = journal_lib.Journal(path, check=runner.check_record)
    self.assertEqual((len(again), again.damaged), (len(lines), []))

  def test_damaged_saved_models_are_moved_aside_and_rebuilt(self):
    workdir = self._copy("models")
    models = os.path.join(workdir, "models")
    no_variables = os.path.join(models, "resnet8-w4__prune-global-s0.9__s1")
    garbage_meta = os.path.join(models, "resnet8-w8__ptq-w8a8__s0")
    shutil.rmtree(os.path.join(no_variables, saved.VARIABLES))
    with open(os.path.join(garbage_meta, saved.METADATA), "w") as f:
      f.write("{\"method\": \x00 not json")
    # Their cells are to be redone (a model is loaded only for pending
    # cells), as a user would after such damage.
    path = os.path.join(workdir, runner.JOURNAL)
    victims = ("resnet8-w4/prune-global-s0.9|s1|",
               "resnet8-w8/ptq-w8a8|s0|")
    lines = open(path).read().splitlines(keepends=True)
    kept = [l for l in lines if not json.loads(l)["key"].startswith(victims)]
    self.assertLess(len(kept), len(lines))
    with open(path, "w") as f:
      f.writelines(kept)
    with self.assertLogs(level="WARNING") as logs:
      rows, ran = self._rerun_counting(workdir)
    text = "\n".join(logs.output)
    self.assertIn(f"The saved model {no_variables} is damaged (it has no "
                  f"variables/ folder): moved it to {no_variables}.damaged-1",
                  text)
    self.assertIn(f"The saved model {garbage_meta} is damaged "
                  "(compression.json is not JSON", text)
    self.assertLen(ran, len(lines) - len(kept))
    self.assertEqual(_by_key(rows), _by_key(self.rows))
    for folder in (no_variables, garbage_meta):
      self.assertTrue(os.path.isdir(folder + ".damaged-1"))
      saved.load(folder)  # Rebuilt whole.

  def test_disk_full_ends_in_one_sentence_and_the_workdir_resumes(self):
    workdir = self._copy("full")
    path = os.path.join(workdir, runner.JOURNAL)
    lines = open(path).read().splitlines(keepends=True)
    with open(path, "w") as f:
      f.writelines(lines[:-6])
    real = io.append_jsonl
    appended = []

    def full(target, rows):  # The disk fills after two more cells.
      if target != path:
        return real(target, rows)
      if len(appended) == 2:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), target)
      appended.append(target)
      return real(target, rows)
    with mock.patch.object(io, "append_jsonl", full):
      with self.assertRaises(io.StorageError) as cm:
        runner.run_study(self.config, workdir)
    message = str(cm.exception)
    self.assertEqual(
        message, f"No space left on device (ENOSPC) writing {path}: "
        f"{len(lines) - 4} cells are saved in {path}; free disk space and "
        "rerun the same command to resume from there.")
    self.assertEqual(lock.holder(workdir), {})  # The lock was released.
    rows, ran = self._rerun_counting(workdir)
    self.assertLen(ran, 4)
    self.assertEqual(_by_key(rows), _by_key(self.rows))


if __name__ == "__main__":
  absltest.main()
