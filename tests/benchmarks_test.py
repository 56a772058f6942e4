"""The benchmark scripts still run against the library (`--smoke`).

A benchmark is not a test of speed (its numbers live in benchmarks/*.md);
this only checks that a change to the library did not break a script, as
the one-trainer redesign once broke train_benchmark.py without any test
noticing, plus invariants the scripts print (the variants compute the same
numbers). Tiny shapes, one step; PyTorch is not needed.
"""

import json
import os
import re
import subprocess
import sys

from absl.testing import absltest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class BenchmarkSmokeTest(absltest.TestCase):

  def _smoke(self, script: str) -> str:
    """Runs `benchmarks/<script> --smoke`; returns its stdout."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", script), "--smoke"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    return proc.stdout

  def test_train_benchmark_runs(self):
    stdout = self._smoke("train_benchmark.py")
    # The report's table: one row per task for the launchers' default.
    for task in ("cifar train (8px, batch 8)", "cifar eval (8px, batch 16)",
                 "digits train (8px, batch 8)", "digits eval (8px, batch 16)"):
      self.assertRegex(stdout, re.escape(f"| {task} | default (") +
                       r"\d+ dev\) \|")

  def test_compile_benchmark_runs(self):
    stdout = self._smoke("compile_benchmark.py")
    rows = [l for l in stdout.splitlines()
            if l.startswith(("| train |", "| pgd |"))]
    self.assertLen(rows, 4)  # Two programs x two variants.
    for program in ("train", "pgd"):
      sums = {l.split("|")[-2].strip() for l in rows
              if l.startswith(f"| {program} |")}
      # The flag may only move float rounding; here it moved nothing.
      self.assertLen(sums, 1, rows)

  def test_attacks_benchmark_runs(self):
    stdout = self._smoke("attacks_benchmark.py")
    devices = json.loads(stdout.split("machine: ", 1)[1].splitlines()[0])[
        "devices"]
    every = f"{devices} device{'s' if devices > 1 else ''}"
    rows = [f"| FGSM, {every} | 8 |", f"| PGD-10 unrolled, {every} | 8 |",
            f"| PGD-10 unrolled, {every} | 4 |",
            f"| PGD-10 fori_loop, {every} | 8 |"]
    if devices > 1:  # The batch split over the devices vs one device.
      rows.append("| PGD-10 unrolled, 1 device | 8 |")
    for row in rows:
      self.assertIn(row, stdout)
    # The ways of sweeping eps compute the same accuracies.
    sweep = [l.split("|")[4].strip() for l in stdout.splitlines()
             if l.startswith(("| robust_accuracy, vmap", "| python loop"))]
    self.assertLen(sweep, 3 + (devices > 1))
    self.assertLen(set(sweep), 1, sweep)


if __name__ == "__main__":
  absltest.main()
