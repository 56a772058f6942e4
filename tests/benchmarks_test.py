"""The benchmarks still run, and what they commit is consistent.

A benchmark is not a test of speed; these check behaviour: each script's
small mode (`--smoke`, or tiny flags for the probes) runs against the
library and keeps its invariants (the variants compute the same numbers),
the shared harness does what its callers rely on, the generated speed table
in benchmarks/README.md is what `speed_table.py` writes from the committed
JSON, and the generated corruptions_results.md is what its script renders.
No test reads the wording or figures of hand-written prose. PyTorch and
imagecorruptions are not needed.
"""

import ast
import glob
import importlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys

from absl.testing import absltest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")


def _import(name: str):
  """Imports `benchmarks/<name>.py` as the scripts import their neighbours."""
  if BENCHMARKS not in sys.path:
    sys.path.insert(0, BENCHMARKS)
  return importlib.import_module(name)


def _run(script: str, *args: str) -> str:
  """Runs `benchmarks/<script> args...`; returns its stdout."""
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run(
      [sys.executable, os.path.join(BENCHMARKS, script), *args],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  if proc.returncode:
    raise AssertionError(f"{script} failed:\n{proc.stderr[-3000:]}")
  return proc.stdout


class SmokeTest(absltest.TestCase):
  """Each durable benchmark's `--smoke` mode runs and keeps its invariants."""

  def test_train_benchmark(self):
    out = os.path.join(self.create_tempdir().full_path, "train.json")
    stdout = _run("train_benchmark.py", "--smoke", f"--output={out}")
    rows = [l for l in stdout.splitlines() if l.startswith("| ")
            and "| default (" in l]
    self.assertLen(rows, 4, stdout)  # Train and eval of both scenarios.
    with open(out) as f:
      report = json.load(f)
    self.assertContainsSubset({"cpu", "cores", "python"}, report["machine"])
    train = _import("train_benchmark")
    for what in ("cifar/train", "cifar/eval", "digits/train", "digits/eval"):
      runs = report["runs"][f"default|{what}"]
      self.assertLen(runs, 1)
      self.assertContainsSubset({"seconds", "cpu_seconds", "max_rss_mb",
                                 "reps", "load"}, runs[0])
      self.assertEqual(train.round_ratios(report, "default", "default",
                                          what), [1.0])

  def test_compile_benchmark(self):
    stdout = _run("compile_benchmark.py", "--smoke")
    rows = [l for l in stdout.splitlines()
            if l.startswith(("| train |", "| pgd |"))]
    self.assertLen(rows, 4)  # Two programs x two variants.
    for program in ("train", "pgd"):
      sums = {l.split("|")[-2].strip() for l in rows
              if l.startswith(f"| {program} |")}
      # The flag may only move float rounding; here it moved nothing.
      self.assertLen(sums, 1, rows)

  def test_members_benchmark(self):
    out = os.path.join(self.create_tempdir().full_path, "members.json")
    _run("members_benchmark.py", "--smoke", f"--output={out}")
    with open(out) as f:
      report = json.load(f)
    self.assertContainsSubset({"cpu", "cores", "python"}, report["machine"])
    self.assertEqual(report["k"], 2)
    for mode in ("sequential", "vmapped"):  # One round of each, timed.
      self.assertLen(report["seconds"][mode], 1)
      self.assertGreater(report["seconds"][mode][0], 0.0)

  def test_attacks_benchmark(self):
    out = os.path.join(self.create_tempdir().full_path, "attacks.json")
    stdout = _run("attacks_benchmark.py", "--smoke", f"--output={out}")
    with open(out) as f:
      report = json.load(f)
    devices = report["machine"]["devices"]
    every = f"{devices} device{'s' if devices > 1 else ''}"
    labels = [(r["label"], r["chunk"]) for r in report["rows"]]
    for label in ((f"FGSM, {every}", 8), (f"PGD-10 unrolled, {every}", 8),
                  (f"PGD-10 unrolled, lax input gradients, {every}", 8),
                  (f"PGD-10 unrolled, {every}", 4),
                  (f"PGD-10 fori_loop, {every}", 8)):
      self.assertIn(label, labels)
    if devices > 1:  # The batch split over the devices vs one device.
      self.assertIn(("PGD-10 unrolled, 1 device", 8), labels)
    # The ways of sweeping eps compute the same accuracies.
    accuracies = {tuple(r["accuracy"]) for r in report["sweep"]}
    self.assertLen(report["sweep"], 3 + (devices > 1))
    self.assertLen(accuracies, 1, report["sweep"])
    self.assertIn("| eps sweep", stdout)


class ProbesTest(absltest.TestCase):
  """The A/B probes kept in benchmarks/probes/ still run, tiny."""

  def test_train_option(self):
    stdout = _run("probes/train_option.py", "--arch=resnet8", "--width=4",
                  "--size=16", "--channels=1", "--batch=8", "--rounds=1",
                  "--reps=1")
    rows = [l.split() for l in stdout.splitlines() if "img/s" in l]
    self.assertEqual([r[4] for r in rows], ["plain", "eltwise"])
    self.assertEqual(rows[0][9], "x1.00")  # The ratio's base.

  def test_attack_stages(self):
    stdout = _run("probes/attack_stages.py", "--width=4", "--examples=8",
                  "--eps=0.1", "--steps=2", "--rounds=1")
    # The two forms give the same images; both were timed.
    self.assertIn("bit-identical: True", stdout)
    rows = [l for l in stdout.splitlines() if "s/attack" in l]
    self.assertEqual([r.split(" compile")[0].strip() for r in rows],
                     ["one program", "staged"])

  def test_input_grad(self):
    stdout = _run("probes/input_grad.py", "--width=4", "--examples=8",
                  "--eps=0.1", "--steps=2", "--rounds=1")
    share = float(re.search(r"bit-identical: ([0-9.]+)", stdout).group(1))
    self.assertGreater(share, 0.99)  # Float rounding may flip a rare sign.
    stdout = _run("probes/input_grad.py", "--layers", "--width=4",
                  "--size=8", "--batch=2")
    rows = [l for l in stdout.splitlines()
            if l.startswith(("| stem", "| stage"))]
    self.assertLen(rows, 5)
    for row in rows:  # Within float rounding of lax's input gradient.
      self.assertLess(float(row.split("|")[-2]), 1e-5, row)


class HarnessTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.harness = _import("harness")

  def test_median_interval_ranks_and_exact_coverage(self):
    interval = self.harness.median_interval
    # Textbook ranks of the 95 % interval of a median: n = 9 -> 2nd and
    # 8th, n = 21 -> 6th and 16th; below n = 6 the whole range.
    for n, (lo, hi) in ((5, (1, 5)), (6, (1, 6)), (9, (2, 8)),
                        (21, (6, 16))):
      self.assertEqual(interval(range(n, 0, -1))[:2], (lo, hi), n)
    # Coverage by enumeration: the median of a continuous distribution lies
    # in [x_(k), x_(n+1-k)] unless k or more of n fair signs fall on one
    # side; count the sign patterns for n = 9.
    n, k = 9, 2
    inside = sum(k <= sum(signs) <= n - k
                 for signs in itertools.product((0, 1), repeat=n))
    self.assertAlmostEqual(interval(range(n))[2], inside / 2**n)
    self.assertGreaterEqual(interval(range(n))[2], 0.95)
    self.assertEqual(interval([1.5])[:2], (1.5, 1.5))

  def test_format_ratio_and_interval_line(self):
    ratios = [1.0 + i / 100 for i in range(21)]
    self.assertEqual(self.harness.format_ratio(ratios),
                     "1.10x (97.3 % interval 1.05-1.15, 21 rounds)")
    line = self.harness.interval_line("a / b", ratios)
    self.assertStartsWith(line, "- a / b per round, 21 rounds: median 1.10")
    self.assertEndsWith(line, "rounds 1.00-1.20")

  def test_worker_serves_timed_requests_with_warm_up(self):
    calls = os.path.join(self.create_tempdir().full_path, "calls")
    script = (
        f"import sys; sys.path.insert(0, {BENCHMARKS!r}); import harness\n"
        "def run(what, reps):\n"
        f"  with open({calls!r}, 'a') as f: f.write(f'{{what}} {{reps}}\\n')\n"
        "harness.serve(run, {'name': 'fake'}, warm_up=True)\n")
    worker = self.harness.Worker([sys.executable, "-c", script])
    self.assertEqual(worker.info, {"name": "fake"})
    for _ in range(2):
      reply = worker.request(what="x", reps=3)
      self.assertCountEqual(reply, ["seconds", "cpu_seconds", "max_rss_mb"])
      self.assertGreaterEqual(reply["seconds"], 0.0)
    worker.request(what="y", reps=1)
    worker.close()
    with open(calls) as f:  # A warm-up call before each first request.
      self.assertEqual(f.read().split("\n")[:-1],
                       ["x 3", "x 3", "x 3", "y 1", "y 1"])

  def test_worker_that_dies_during_set_up(self):
    with self.assertRaisesRegex(RuntimeError, "died during set-up"):
      self.harness.Worker([sys.executable, "-c", "pass"])

  def test_clean_env_and_public_command(self):
    env = self.harness.clean_env({"XLA_FLAGS": "--x", "LD_PRELOAD": "a.so",
                                  "MIMALLOC_PURGE_DELAY": "-1", "HOME": "h"})
    self.assertEqual(env, {"HOME": "h", "JAX_PLATFORMS": "cpu"})
    self.assertEqual(
        self.harness.public_command(["b.py", "--ic_python=/x/bin/python",
                                     "--torch_python", "/y/python", "--n=1"]),
        "b.py --ic_python=$IC_PYTHON --torch_python $TORCH_PYTHON --n=1")
    self.assertIsInstance(self.harness.cpu_name(), str)
    self.assertTrue(self.harness.cpu_name())


class CommittedResultsTest(absltest.TestCase):
  """The generated files are what their generators write."""

  def test_speed_table_block_is_generated(self):
    speed_table = _import("speed_table")
    self.assertEqual(speed_table.committed_block(), speed_table.block(),
                     "run `python benchmarks/speed_table.py --write`")
    for row in speed_table.table().splitlines()[2:]:
      results = re.search(r"\]\(([^)]+)\)", row).group(1)
      self.assertTrue(os.path.exists(os.path.join(BENCHMARKS, results)),
                      row)

  def test_speed_table_check_flag(self):
    readme = os.path.join(self.create_tempdir().full_path, "README.md")
    speed_table = _import("speed_table")
    with open(readme, "w") as f:
      f.write(f"intro\n{speed_table.BEGIN}\nstale\n{speed_table.END}\nend\n")
    speed_table.write(readme)
    with open(readme) as f:
      text = f.read()
    self.assertEqual(text, f"intro\n{speed_table.block()}\nend\n")
    self.assertEqual(speed_table.committed_block(readme), speed_table.block())

  def test_corruptions_results_md_is_rendered_from_its_json(self):
    tmp = self.create_tempdir().full_path
    shutil.copy(os.path.join(BENCHMARKS, "corruptions_results.json"),
                os.path.join(tmp, "out.json"))
    _run("corruptions_benchmark.py", "--render_only",
         f"--out={os.path.join(tmp, 'out.md')}")
    with open(os.path.join(tmp, "out.md")) as f:
      rendered = f.read()
    with open(os.path.join(BENCHMARKS, "corruptions_results.md")) as f:
      self.assertEqual(f.read(), rendered,
                       "run corruptions_benchmark.py --render_only")

  def test_every_results_json_is_used(self):
    """A committed JSON is read by speed_table.py or named by a results
    file; run-by-run leftovers belong in git history."""
    with open(os.path.join(BENCHMARKS, "speed_table.py")) as f:
      table_src = f.read()
    docs = ""
    for path in glob.glob(os.path.join(BENCHMARKS, "*.md")):
      with open(path) as f:
        docs += f.read()
    for path in glob.glob(os.path.join(BENCHMARKS, "*.json*")):
      name = os.path.basename(path)
      with open(path) as f:  # Parses.
        if name.endswith(".jsonl"):
          [json.loads(l) for l in f if l.strip()]  # pylint: disable=expression-not-assigned
        else:
          json.load(f)
      self.assertTrue(name in table_src or name in docs, name)

  def test_no_machine_local_paths(self):
    """Results files and script docstrings name no local folder or venv."""
    local = re.compile(r"/work/|/tmp/|/home/|/root/|\.venv/")
    for path in sorted(glob.glob(os.path.join(BENCHMARKS, "**", "*"),
                                 recursive=True)):
      if path.endswith((".md", ".json", ".jsonl", ".txt")):
        with open(path) as f:
          text = f.read()
      elif path.endswith(".py"):
        with open(path) as f:
          text = ast.get_docstring(ast.parse(f.read())) or ""
      else:
        continue
      self.assertIsNone(local.search(text), path)


if __name__ == "__main__":
  absltest.main()
