"""robustjax.study.runtimes: the ledger of timed runs, its page and line.

The record of a real finished run (and its errors for an unfinished one) is
tested on the runlocal study in tests/study/runner_test.py; here: result
comparison, the ledger file, the table, the runtime page and README line,
the refusals, the committed ledger.
"""

import os
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest

from robustjax import io
from robustjax.study import runner
from robustjax.study import runtimes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
COMMITTED = os.path.join(ROOT, "docs", "results", "default")
HEADER = "model_id,seed,shift,name,level,accuracy,n\n"


def _csv(*accuracies):
  return HEADER + "".join(f"m,0,corruption,fog,{i + 1},{a},200\n"
                          for i, a in enumerate(accuracies))


def _record(machine="AMD EPYC (2 cores)", finished="2026-12-03 01:00:00",
            **kw):
  r = {"finished": finished, "machine": machine, "devices": "2 x cpu",
       "malloc": "mimalloc 3.4.3 (MIMALLOC_PURGE_DELAY=-1)", "code": "abc1234",
       "source": "test", "segments": 1, "wall_s": 300.0, "compile_s": 30.0,
       "peak_rss_mb": 1536.0, "results": "identical"}
  r.update(kw)
  return r


class CompareResultsTest(absltest.TestCase):

  def test_identical_moved_and_missing_rows(self):
    self.assertEqual(runtimes.compare_results(_csv(0.5, 0.25),
                                              _csv(0.5, 0.25)), "identical")
    self.assertEqual(runtimes.compare_results(_csv(0.5, 0.3),
                                              _csv(0.5, 0.25)),
                     "1 of 2 rows differ")
    # Rows are matched on their key, not their position in the file.
    swapped = HEADER + "".join(reversed(_csv(0.5, 0.25).splitlines(True)[1:]))
    self.assertNotEqual(swapped, _csv(0.5, 0.25))
    self.assertEqual(runtimes.compare_results(swapped, _csv(0.5, 0.25)),
                     "identical")
    self.assertEqual(runtimes.compare_results(_csv(0.5), _csv(0.5, 0.25)),
                     "1 of 2 rows differ")


class LedgerTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.results = tempfile.mkdtemp()

  def test_add_keeps_time_order_and_refuses_a_run_twice(self):
    runtimes.add(self.results, _record(finished="2026-12-03 02:00:00"))
    runtimes.add(self.results, _record(finished="2026-12-03 01:00:00"))
    self.assertEqual([r["finished"] for r in runtimes.read(self.results)],
                     ["2026-12-03 01:00:00", "2026-12-03 02:00:00"])
    with self.assertRaisesRegex(ValueError, "finished 2026-12-03 01:00:00 on "
                                "AMD EPYC .* is in runtimes.jsonl already"):
      runtimes.add(self.results, _record(finished="2026-12-03 01:00:00"))
    # The same time on another machine is another run.
    runtimes.add(self.results, _record(machine="Xeon (2 cores)"))
    self.assertLen(runtimes.read(self.results), 3)

  def test_table(self):
    self.assertIn("no runtimes.jsonl", runtimes.table(self.results))
    runtimes.add(self.results, _record(finished="2026-12-03 01:00:00",
                                       wall_s=240.0))
    runtimes.add(self.results, _record(
        finished="2026-12-03 02:00:00", wall_s=360.0, compile_s=36.0,
        code=None, committed_in="def5678", peak_rss_mb=None,
        malloc="glibc (GLIBC_TUNABLES=glibc.malloc.hugetlb=1)",
        results="3 of 4752 rows differ"))
    runtimes.add(self.results, _record(machine="Intel Xeon (2 cores)",
                                       wall_s=600.0, compile_s=120.0))
    text = runtimes.table(self.results, shown=2)
    self.assertIn("`runtimes.jsonl`: 3 runs", text)
    self.assertIn("- AMD EPYC (2 cores): 2 run(s), 4.0-6.0 min (median 5.0); "
                  "newest 2026-12-03: 6.0 min, compile 10.0 %.", text)
    self.assertIn("- Intel Xeon (2 cores): 1 run(s), 10.0-10.0 min (median "
                  "10.0); newest 2026-12-03: 10.0 min, compile 20.0 %.", text)
    rows = [l for l in text.splitlines() if l.startswith("| 2026")]
    self.assertEqual(rows, [  # Newest first, the newest `shown` only.
        "| 2026-12-03 02:00 | AMD EPYC (2 cores), 2 x cpu | committed in "
        "def5678 | glibc, huge pages | 6.0 min | 36 s (10.0 %) | n/a | 3 of "
        "4752 rows differ |",
        "| 2026-12-03 01:00 | Intel Xeon (2 cores), 2 x cpu | abc1234 | "
        "mimalloc 3.4.3 | 10.0 min | 120 s (20.0 %) | 1.50 GiB | identical |"])

  def test_page_and_line(self):
    self.assertIn("not recorded", runtimes.line(self.results, "x"))
    io.append_jsonl(os.path.join(self.results, "timing.jsonl"), [
        {"total": {"wall_s": 200.0, "compile_s": 20.0},
         "stages": {"build/original": {"wall_s": 150.0, "compile_s": 15.0},
                    "report": {"wall_s": 50.0, "compile_s": 5.0}},
         "finished": "2026-12-03 01:00:00", "machine": "M (2 cores)",
         "devices": "2 x cpu"},
        {"total": {"wall_s": 100.0, "compile_s": 10.0},
         "stages": {"build/original": {"wall_s": 100.0, "compile_s": 10.0}},
         "finished": "2026-12-03 01:30:00", "machine": "M (2 cores)",
         "devices": "2 x cpu"}])
    runtimes.add(self.results, _record(machine="M (2 cores)",
                                       finished="2026-12-03 01:30:00"))
    line = runtimes.line(self.results, "README command (1)")
    self.assertNotIn("\n", line)
    self.assertIn("README command (1) takes **5.0 min** in the study loop "
                  "(10 % of it JAX tracing + compilation) on M (2 cores), "
                  "2 x cpu", line)
    link = f"{self.results}/runtimes.md"
    self.assertIn(f"[{link}]({link})", line)
    page = runtimes.page(self.results, "python -m robustjax.study.summary X")
    self.assertIn("2 segment(s)", page)
    self.assertIn("| build/original | 250 | 25 |", page)  # Segments summed.
    self.assertIn("| 2026-12-03 01:30 | M (2 cores), 2 x cpu |", page)
    self.assertIn("python -m robustjax.study.summary X --add_run=", page)

  def test_refusals_say_what_to_do(self):
    workdir = tempfile.mkdtemp()
    with self.assertRaisesRegex(ValueError, "has no timing.jsonl: pass the "
                                "--workdir of a finished launch/study.py"):
      runtimes.record_of(workdir, self.results, "x")
    io.append_jsonl(os.path.join(workdir, "timing.jsonl"), [
        {"total": {"wall_s": 1.0, "compile_s": 0.5}, "finished": "t"}])
    io.write_json(os.path.join(workdir, "config.json"),
                  {"seed": 0, "batch_size": 64})
    io.write_json(os.path.join(self.results, "config.json"),
                  {"seed": 0, "batch_size": 128})
    with self.assertRaisesRegex(ValueError, "ran another config than .* "
                                r"\(fields batch_size differ\)"):
      runtimes.record_of(workdir, self.results, "x")
    io.write_json(os.path.join(self.results, "config.json"),
                  {"seed": 0, "batch_size": 64})
    with self.assertRaisesRegex(ValueError, "has no progress.json, so "
                                "whether its study finished is unknown"):
      runtimes.record_of(workdir, self.results, "x")

  def test_command_line_error_is_one_line_and_writes_nothing(self):
    workdir = tempfile.mkdtemp()
    proc = subprocess.run(
        [sys.executable, "-m", "robustjax.study.summary",
         f"--results={self.results}", f"--add_run={workdir}",
         "--readme=/nonexistent/README.md"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    self.assertEqual(proc.returncode, 2, proc.stderr)
    self.assertIn("has no timing.jsonl", proc.stderr.splitlines()[-1])
    self.assertFalse(os.path.exists(os.path.join(self.results,
                                                 runtimes.LEDGER)))


class CodeVersionTest(absltest.TestCase):

  def test_commit_of_this_checkout_and_none_elsewhere(self):
    if not os.path.isdir(os.path.join(ROOT, ".git")):
      self.skipTest("not a git checkout: nothing to compare with")
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short=7",
                           "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    code = runner.code_version()
    self.assertIn(code, (head, head + "-dirty"))
    # A copy of the package inside another repository has no version: that
    # repository's commit says nothing about the code.
    outer = tempfile.mkdtemp()
    subprocess.run(["git", "init", "-q", outer], check=True)
    shutil.copytree(os.path.join(ROOT, "robustjax"),
                    os.path.join(outer, "sub", "robustjax"))
    proc = subprocess.run(
        [sys.executable, "-c", "from robustjax.study import runner; "
         "print(runner.__file__, runner.code_version())"],
        cwd=os.path.join(outer, "sub"), capture_output=True, text=True,
        timeout=300, env={**os.environ, "PYTHONPATH": os.path.join(outer,
                                                                   "sub")})
    self.assertEqual(proc.returncode, 0, proc.stderr)
    path, version = proc.stdout.split()
    self.assertTrue(path.startswith(outer), path)
    self.assertEqual(version, "None")


class CommittedLedgerTest(absltest.TestCase):

  def test_newest_record_is_the_committed_run(self):
    # The committed timing.jsonl is the newest run of the ledger, so the
    # runtime page's stage table and its run table describe the same run.
    ledger = runtimes.read(COMMITTED)
    self.assertNotEmpty(ledger)
    segments = io.read_jsonl(os.path.join(COMMITTED, "timing.jsonl"))
    newest = ledger[-1]
    self.assertEqual(newest["finished"], segments[-1]["finished"])
    self.assertAlmostEqual(newest["wall_s"], sum(
        s["total"]["wall_s"] for s in segments), places=2)
    self.assertAlmostEqual(newest["compile_s"], sum(
        s["total"]["compile_s"] for s in segments), places=2)
    self.assertEqual(newest["results"], "identical")
    for r in ledger:
      self.assertTrue(set(_record()) <= set(r), r)
      self.assertTrue(r["code"] or r.get("committed_in"), r)
    self.assertEqual(ledger, sorted(ledger, key=lambda r: r["finished"]))
    with open(os.path.join(COMMITTED, runtimes.LEDGER)) as f:
      self.assertEqual(len(f.read().splitlines()), len(ledger))  # No torn line.


if __name__ == "__main__":
  absltest.main()
