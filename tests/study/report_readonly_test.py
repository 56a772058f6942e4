"""launch/report.py on a read-only copy of a finished runlocal study.

A reader never writes into the run folder: `--print` prints the report and
writes nothing, `--output_dir` writes there, and without either a read-only
workdir gets one sentence saying to use them. Rows come from the journal, so
a stale `results.jsonl` cannot make the report contradict it.

Making the copy read-only: the tests run as root in CI, where `chmod a-w`
does not stop writes. A read-only bind mount in a private mount namespace
(`unshare -m`) is a real read-only file system (EROFS); as another user
`chmod -R a-w` is used. Where neither is available that test is skipped.
The injected test always runs: every write through robustjax.io into the
workdir raises EROFS; it proves that the launcher then falls back to
printing, and (the folder is compared before and after) that nothing else
writes there, but not how a real mount behaves.
"""

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile

from absl.testing import absltest

from configs import default
from robustjax.study import report
from robustjax.study import runner

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
REPORT = os.path.join(REPO, "launch", "report.py")
# Runs "$@" with the folder "$0" mounted read-only (a private namespace).
_MOUNT_RO = ('mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && '
             'exec "$@"')
# launch/report.py with every robustjax.io write into argv[1] refused.
_INJECT_EROFS = """
import errno, os, runpy, sys
sys.path.insert(0, {repo!r})
from robustjax import io
workdir = os.path.realpath(sys.argv.pop(1))

def refusing(real):
  def call(path, *args, **kwargs):
    if os.path.realpath(os.fspath(path)).startswith(workdir):
      raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
    return real(path, *args, **kwargs)
  return call
io.write_atomic = refusing(io.write_atomic)
io.makedirs = refusing(io.makedirs)
sys.argv[0] = {script!r}
runpy.run_path({script!r}, run_name="__main__")
"""


def _tree(folder):
  """Every path under `folder` with its size and modification time."""
  out = {}
  for top, dirs, files in os.walk(folder):
    for name in dirs + files:
      path = os.path.join(top, name)
      info = os.lstat(path)
      out[os.path.relpath(path, folder)] = (info.st_size, info.st_mtime_ns)
  return out


def _text(markdown):
  """A report up to its plots, without images (a printed one draws none)."""
  return [l for l in markdown.split("\n## Plots")[0].splitlines()
          if not l.startswith("![") and l]


class ReadOnlyReportTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    cls.config = default.get_config("runlocal")
    with cls.config.unlocked():
      cls.config.study.seeds = 1
    cls.finished = os.path.join(cls.root, "finished")
    runner.run_study(cls.config, cls.finished)
    with open(os.path.join(cls.finished, "report.md")) as f:
      cls.report = f.read()

  @classmethod
  def tearDownClass(cls):
    for top, dirs, _ in os.walk(cls.root):
      for name in dirs:
        os.chmod(os.path.join(top, name), 0o755)
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def _copy(self, name):
    """A copy of the finished workdir with a stale results.jsonl (half of
    its rows): a reader must not trust it."""
    workdir = os.path.join(self.root, name)
    shutil.copytree(self.finished, workdir,
                    ignore=shutil.ignore_patterns("jax_cache"))
    path = os.path.join(workdir, runner.RESULTS)
    with open(path) as f:
      lines = f.readlines()
    with open(path, "w") as f:
      f.writelines(lines[:len(lines) // 2])
    return workdir

  def _read_only_prefix(self, workdir):
    """A command prefix under which `workdir` is read-only, or None."""
    if os.geteuid() != 0:
      for top, dirs, files in os.walk(workdir):
        for name in dirs + files:
          path = os.path.join(top, name)
          os.chmod(path, os.stat(path).st_mode & ~0o222)
      os.chmod(workdir, os.stat(workdir).st_mode & ~0o222)
      return []
    prefix = ["unshare", "-m", "sh", "-c", _MOUNT_RO, workdir]
    try:
      probe = subprocess.run(prefix + ["touch", os.path.join(workdir, "x")],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
      return None
    if "Read-only file system" not in probe.stderr:
      return None
    return prefix

  def _run(self, prefix, *args):
    return subprocess.run(prefix + list(args), cwd=REPO, capture_output=True,
                          text=True, timeout=300)

  def _check_printed(self, result, workdir):
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertEqual(_text(result.stdout), _text(self.report))
    total = json.load(open(os.path.join(workdir, report.PROGRESS)))[
        "cells_total"]
    self.assertIn(f"Complete: {total} of {total} cells.", result.stdout)
    self.assertIn(f"Complete: {total} of {total} cells.", result.stderr)
    self.assertNotIn("Errno 30", result.stderr)

  def test_print_and_output_dir_on_a_read_only_mount(self):
    workdir = self._copy("mounted")
    before = _tree(workdir)
    prefix = self._read_only_prefix(workdir)
    if prefix is None:
      self.skipTest("no way to make a folder read-only here (root without "
                    "unshare -m)")
    python = [sys.executable, REPORT, f"--workdir={workdir}"]
    self._check_printed(self._run(prefix, *python, "--print"), workdir)

    refused = self._run(prefix, *python)
    self.assertEqual(refused.returncode, 1, refused.stderr[-3000:])
    fatal = [l for l in refused.stderr.splitlines() if l.startswith("FATAL")]
    self.assertEqual(fatal, [
        f"FATAL {workdir} is read-only, so the report cannot be written "
        "there: pass --print to print it, or --output_dir=DIR to write "
        "report.md, results.csv and plots/ into DIR."])
    self.assertNotIn("Traceback", refused.stderr)

    out = os.path.join(self.root, "elsewhere")
    written = self._run(prefix, *python, f"--output_dir={out}")
    self.assertEqual(written.returncode, 0, written.stderr[-3000:])
    with open(os.path.join(out, "results.csv")) as f, open(os.path.join(
        self.finished, "results.csv")) as g:
      self.assertEqual(f.read(), g.read())
    self.assertEqual(_text(open(os.path.join(out, "report.md")).read()),
                     _text(self.report))
    self.assertContainsSubset(
        {"accuracy_vs_size.png", "claims_forest.png"},
        set(os.listdir(os.path.join(out, "plots"))))
    self.assertEqual(_tree(workdir), before)  # Nothing written there.

  def test_print_when_every_write_fails_with_erofs(self):
    workdir = self._copy("injected")
    before = _tree(workdir)
    inject = [sys.executable, "-c", _INJECT_EROFS.format(
        repo=REPO, script=REPORT), workdir, f"--workdir={workdir}"]
    self._check_printed(self._run([], *inject, "--print"), workdir)
    refused = self._run([], *inject)
    self.assertEqual(refused.returncode, 1, refused.stderr[-3000:])
    self.assertIn(f"FATAL {workdir} is read-only", refused.stderr)
    self.assertEqual(_tree(workdir), before)

  def test_a_writable_workdir_is_still_written(self):
    workdir = self._copy("writable")
    os.remove(os.path.join(workdir, "report.md"))
    result = self._run([], sys.executable, REPORT, f"--workdir={workdir}")
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertEqual(open(os.path.join(workdir, "report.md")).read(),
                     self.report)


if __name__ == "__main__":
  absltest.main()
