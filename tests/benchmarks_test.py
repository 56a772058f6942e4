"""The benchmark scripts still run against the library (`--smoke`).

A benchmark is not a test of speed (its numbers live in benchmarks/*.md);
this only checks that a change to the library did not break a script, as
the one-trainer redesign once broke train_benchmark.py without any test
noticing, plus invariants the scripts print (the variants compute the same
numbers). Tiny shapes, one step; PyTorch is not needed.
"""

import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys

from absl.testing import absltest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_benchmark(name: str):
  """Imports `benchmarks/<name>.py` (its folder on sys.path while loading,
  for the scripts that import their neighbours)."""
  spec = importlib.util.spec_from_file_location(
      name, os.path.join(ROOT, "benchmarks", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
  try:
    spec.loader.exec_module(module)
  finally:
    sys.path.pop(0)
  return module


class BenchmarkSmokeTest(absltest.TestCase):

  def _run(self, script: str, *args: str) -> str:
    """Runs `benchmarks/<script> args...`; returns its stdout."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", script), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    return proc.stdout

  def _smoke(self, script: str) -> str:
    """Runs `benchmarks/<script> --smoke`; returns its stdout."""
    return self._run(script, "--smoke")

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
            f"| PGD-10 unrolled, lax input gradients, {every} | 8 |",
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


  def test_train_option_benchmark(self):
    stdout = self._run("train_option_benchmark.py", "--arch=resnet8",
                       "--width=4", "--size=16", "--channels=1", "--batch=8",
                       "--rounds=1", "--reps=1")
    rows = [l.split() for l in stdout.splitlines() if "img/s" in l]
    self.assertEqual([r[4] for r in rows], ["plain", "eltwise"])
    self.assertEqual(rows[0][9], "x1.00")  # The ratio's base.
    self.assertGreater(float(rows[1][8]), 0.0)


  def test_attack_stages_benchmark(self):
    stdout = self._run("attack_stages_benchmark.py", "--width=4",
                       "--examples=8", "--eps=0.1", "--steps=2", "--rounds=1")
    # The two forms give the same images; both were timed.
    self.assertIn("bit-identical: True", stdout)
    rows = [l for l in stdout.splitlines() if "s/attack" in l]
    self.assertEqual([r.split(" compile")[0].strip() for r in rows],
                     ["one program", "staged"])

  def test_input_grad_benchmark(self):
    stdout = self._run("input_grad_benchmark.py", "--width=4",
                       "--examples=8", "--eps=0.1", "--steps=2", "--rounds=1")
    rows = [l for l in stdout.splitlines() if "s/attack" in l]
    self.assertEqual([r.split(" compile")[0].strip() for r in rows],
                     ["input_grad", "lax"])
    share = float(re.search(r"bit-identical: ([0-9.]+)", stdout).group(1))
    self.assertGreater(share, 0.99)  # Float rounding may flip a rare sign.
    stdout = self._run("input_grad_benchmark.py", "--layers", "--width=4",
                       "--size=8", "--batch=2")
    rows = [l for l in stdout.splitlines()
            if l.startswith(("| stem", "| stage"))]
    self.assertLen(rows, 5)
    for row in rows:  # Within float rounding of lax's input gradient.
      self.assertLess(float(row.split("|")[-2]), 1e-5, row)

  def test_conv_ops_benchmark(self):
    stdout = self._smoke("conv_ops_benchmark.py")
    rows = [l for l in stdout.splitlines() if l.startswith("| 3x3 16->16")]
    self.assertEqual([r.split("|")[2].strip() for r in rows],
                     ["fwd", "dx", "dw", "bwd"])
    for row in rows:  # Ours only (no torch in the test venv): a positive ms.
      self.assertGreater(float(row.split("|")[3]), 0.0, row)
    self.assertIn("| fwd + bwd |", stdout)

  def test_train_probes(self):
    stdout = self._run("train_probes.py", "taps", "--smoke")
    self.assertRegex(stdout, r"\(8, 8, 4, 4, 3, 1\) lax: wall [0-9.]+ cpu "
                     r"[0-9.]+  taps: wall [0-9.]+")
    stdout = self._run("train_probes.py", "hlo", "--smoke")
    fusions = int(re.search(r"batch 8: (\d+) fusions", stdout).group(1))
    counts = [int(l.split()[0]) for l in stdout.splitlines()
              if re.match(r"^\s+\d+  ", l)]
    self.assertEqual(sum(counts), fusions)
    self.assertIn("transpose", stdout)
    # The probe checks the space-to-depth form's values and input gradients
    # against lax's before it times them.
    stdout = self._run("train_probes.py", "s2d", "--smoke")
    self.assertRegex(stdout, r"lax dx: wall [0-9.]+ cpu [0-9.]+  s2d fwd: "
                     r"wall [0-9.]+ cpu [0-9.]+  s2d dx: wall [0-9.]+")
    stdout = self._run("train_probes.py", "evalbatch", "--smoke")
    for name in ("f32 batch 16", "f32 batch 32", "bf16 batch 16",
                 "bf16 batch 32"):
      self.assertRegex(stdout, f"resnet8:4 {name}: [0-9]+ img/s")
    self.assertRegex(stdout, r"bf16 vs f32 logits .* max \|diff\| [0-9.e-]+ "
                     r"of max \|logit\| [0-9.e+-]+; argmax agreement")
    # The layout probe checks NCHW's values against NHWC's before timing.
    stdout = self._run("train_probes.py", "layout", "--smoke")
    self.assertRegex(stdout, r"fwd: NHWC [0-9.]+ NCHW [0-9.]+ ms  dx: NHWC "
                     r"[0-9.]+ NCHW [0-9.]+ ms  dw: NHWC [0-9.]+ NCHW")


class CommittedEvalBatchResultsTest(absltest.TestCase):
  """train_results.md's 2026-12-03 tables from the probes' committed output."""

  def test_table_matches_the_committed_output(self):
    with open(os.path.join(ROOT, "benchmarks",
                           "train_probes_evalbatch.txt")) as f:
      out = f.read()
    with open(os.path.join(ROOT, "benchmarks", "train_results.md")) as f:
      doc = f.read()
    rate = {(w, dt, int(b)): int(r) for w, dt, b, r in re.findall(
        r"resnet8:(\d+) (f32|bf16) batch (\d+): (\d+) img/s", out)}
    self.assertLen(rate, 16)
    for w in ("8", "16"):
      ratios = (rate[w, "f32", 1000] / rate[w, "f32", 500],
                rate[w, "f32", 2000] / rate[w, "f32", 500],
                rate[w, "bf16", 500] / rate[w, "f32", 500])
      self.assertIn(f"| {w} | " + " | ".join(f"{r:.2f}x" for r in ratios)
                    + " |", doc)

  def test_layout_table_matches_the_committed_output(self):
    with open(os.path.join(ROOT, "benchmarks", "train_probes_layout.txt")) as f:
      out = f.read().splitlines()
    with open(os.path.join(ROOT, "benchmarks", "train_results.md")) as f:
      doc = f.read()
    self.assertLen(out, 4)
    for line in out:
      n, size, ci, co, k, stride = map(int, re.match(
          r"\((\d+), (\d+), (\d+), (\d+), (\d+), (\d+)\)", line).groups())
      ms = re.findall(r"(fwd|dx|dw): NHWC ([0-9.]+) NCHW ([0-9.]+) ms", line)
      self.assertEqual([p for p, _, _ in ms], ["fwd", "dx", "dw"])
      ratios = [float(b) / float(a) for _, a, b in ms]
      self.assertTrue(all(r > 1 for r in ratios), line)  # "Slower in every"
      self.assertIn(f"| {size}x{size}x{ci} -> {co}, stride {stride} | " +
                    " | ".join(f"{r:.2f}x" for r in ratios) + " |", doc)


class CommittedConvOpsResultsTest(absltest.TestCase):
  """Per-convolution totals and run K's README figures come from the JSON."""

  def test_totals_tables_and_readme_match_the_raw_numbers(self):
    bench = _load_benchmark("conv_ops_benchmark")
    with open(os.path.join(ROOT, "benchmarks", "train_results.md")) as f:
      doc = f.read()
    ratios = {}
    for name in ("cifar", "digits"):
      with open(os.path.join(ROOT, "benchmarks",
                             f"conv_ops_results_{name}.json")) as f:
        table = bench._markdown(json.load(f))  # pylint: disable=protected-access
      totals = table[table.index("| per training step"):]
      self.assertIn(totals, doc, name)
      ratios[name] = {row.split("|")[1].strip(): row.split("|")[-2].strip()
                      for row in totals.splitlines()[2:]}
    # README's sentence on run K and on the per-convolution totals.
    with open(os.path.join(ROOT, "README.md")) as f:
      readme = " ".join(f.read().split())
    self.assertIn(f"take {ratios['cifar']['fwd + bwd']}x / "
                  f"{ratios['digits']['fwd + bwd']}x of PyTorch's time", readme)
    self.assertIn(f"kernel gradients {ratios['cifar']['dw']}x / "
                  f"{ratios['digits']['dw']}x", readme)
    train = _load_benchmark("train_benchmark")
    with open(os.path.join(ROOT, "benchmarks",
                           "train_results_run_k.json")) as f:
      report = json.load(f)
    variants = [v for v in report["info"] if v != "torch"]
    whats = [f"{s}/{k}" for s in train.SCENARIOS for k in ("train", "eval")]
    rows = {}
    for row in train._markdown(report, variants, whats, True).splitlines():  # pylint: disable=protected-access
      cells = [c.strip() for c in row.split("|")]
      if len(cells) > 5 and cells[1].endswith(("train (32px, batch 128)",
                                               "train (16px, batch 64)")):
        rows[(cells[1].split()[0], cells[2].split()[0])] = cells
    cifar_ours, cifar_torch = rows[("cifar", "default")], rows[("cifar",
                                                                "PyTorch")]
    self.assertEqual(cifar_ours[5], rows[("digits", "default")][5])
    self.assertIn(f"{cifar_ours[5]} at both shapes ({cifar_ours[4]} vs "
                  f"{cifar_torch[4]} img/s at 32 px)", readme)


class CommittedTrainResultsTest(absltest.TestCase):
  """The headline training table and README figures come from the JSON."""

  def _ab_table(self, runs, a, b):
    """Checks train_results.md's A/B table of `runs` (a over b) vs the JSON.

    Returns:
      {run: the table's eight cells, as recomputed}.
    """
    bench = _load_benchmark("train_benchmark")
    whats = [f"{s}/{k}" for s in bench.SCENARIOS for k in ("train", "eval")]
    cells = {}
    for run in runs:
      with open(os.path.join(ROOT, "benchmarks",
                             f"train_results_run_{run}.json")) as f:
        report = json.load(f)
      speedup = bench.ab_speedups(report, a, b, whats)
      vs_torch = {w: bench.ab_speedups(report, w, "torch", whats)
                  for w in (a, b)}
      rss = [max(r["max_rss_mb"] for k, v in report["runs"].items()
                 if k.startswith(f"{w}|") for r in v)
             for w in (a, b, "torch")]
      cells[run] = (
          [f"{speedup[w][0]:.2f}x / {speedup[w][1]:.2f}x" for w in
           ("cifar/train", "digits/train", "cifar/eval", "digits/eval")] +
          [f"{vs_torch[a]['cifar/train'][0]:.2f}x",
           f"{vs_torch[b]['cifar/train'][0]:.2f}x",
           f"{vs_torch[a]['digits/train'][0]:.2f}x",
           " / ".join(f"{v:.0f}" for v in rss)])
    with open(os.path.join(ROOT, "benchmarks", "train_results.md")) as f:
      doc = f.read()
    header = ("| (median of per-round ratios) | " +
              " | ".join(f"run {r.upper()}" for r in runs) + " |")
    table = doc[doc.index(header):]
    rows = [r for r in table.splitlines()[2:] if r.startswith("|")][:8]
    self.assertLen(rows, 8)
    for i, row in enumerate(rows):
      got = [c.strip() for c in row.split("|")[2:2 + len(runs)]]
      self.assertEqual(got, [cells[r][i] for r in runs], row)
    return cells

  def test_huge_pages_table_and_readme_match_the_raw_numbers(self):
    cells = self._ab_table(("p", "q"), "default", "no_huge_pages")
    with open(os.path.join(ROOT, "README.md")) as f:
      readme = " ".join(f.read().split())
    self.assertIn(
        f"{cells['p'][0].split(' / ')[0]} / {cells['q'][0].split(' / ')[0]} "
        f"faster at 32 px, {cells['p'][4]} / {cells['q'][4]} PyTorch", readme)

  def test_mimalloc_table_and_readme_match_the_raw_numbers(self):
    cells = self._ab_table(("s", "t"), "default", "glibc_huge_pages")
    with open(os.path.join(ROOT, "README.md")) as f:
      readme = " ".join(f.read().split())
    self.assertIn(
        f"{cells['s'][4]} / {cells['t'][4]} PyTorch eager at 32x32x3 / "
        f"batch 128 and {cells['s'][6]} / {cells['t'][6]} at the digits "
        "shape", readme)
    self.assertIn(
        f"{cells['s'][0].split(' / ')[0]} / {cells['t'][0].split(' / ')[0]} "
        "faster than with glibc's huge pages", readme)

  def test_run_y_table_intervals_and_readme_match_the_raw_numbers(self):
    bench = _load_benchmark("train_benchmark")
    interval = _load_benchmark("bench_model").median_interval
    with open(os.path.join(ROOT, "benchmarks",
                           "train_results_run_y.json")) as f:
      report = json.load(f)
    whats = [f"{s}/{k}" for s in bench.SCENARIOS for k in ("train", "eval")]
    lines = bench._markdown(report, ["default"], whats, True).splitlines()  # pylint: disable=protected-access
    with open(os.path.join(ROOT, "benchmarks", "train_results.md")) as f:
      doc = f.read()
    shown = [l for l in lines if l.startswith(("| ", "- "))]
    self.assertLen(shown, 1 + 2 * len(whats) + len(whats))
    for line in shown:
      self.assertIn(line, doc)

    def figures(what):
      ratios = bench.round_ratios(report, "default", "torch", what)
      lo, hi, coverage = interval(ratios)
      return statistics.median(ratios), lo, hi, coverage

    with open(os.path.join(ROOT, "README.md")) as f:
      readme = " ".join(f.read().split())
    c, d = figures("cifar/train"), figures("digits/train")
    self.assertIn(
        f"at **{c[0]:.2f}x PyTorch eager** at 32x32x3 / batch 128 "
        f"({c[3]:.1%}".replace("%", " %") + f" interval of the median "
        f"per-round ratio {c[1]:.2f}-{c[2]:.2f}) and {d[0]:.2f}x at the "
        f"digits shape (16x16x1 / batch 64; {d[1]:.2f}-{d[2]:.2f}); "
        f"inference (batch 500, split over both devices) "
        f"{figures('cifar/eval')[0]:.2f}x / {figures('digits/eval')[0]:.2f}x",
        readme)
    self.assertGreater(c[1], 1.0)  # The headline's "whole interval above".

  def test_allocator_survey_table_matches_the_raw_numbers(self):
    bench = _load_benchmark("train_benchmark")
    whats = ("cifar/train", "digits/train", "cifar/eval", "digits/eval")
    with open(os.path.join(ROOT, "benchmarks", "train_results.md")) as f:
      doc = f.read()
    table = doc[doc.index("| allocator | run | speed-up over glibc"):]
    rows = [r for r in table.splitlines()[2:] if r.startswith("|")]
    # The survey's temporary variants, in the table's order.
    variants = [(1, "jemalloc"), (1, "mimalloc"), (2, "mim_p100"),
                (2, "mim_p1000"), (1, "mimalloc_nopurge"),
                (2, "mimalloc_nopurge"), (2, "mim_large")]
    self.assertLen(rows[:len(variants)], len(variants))
    reports = {}
    for n in (1, 2):
      with open(os.path.join(ROOT, "benchmarks",
                             f"train_results_allocators_{n}.json")) as f:
        reports[n] = json.load(f)

    def peak(report, who):
      return max(r["max_rss_mb"] for k, v in report["runs"].items()
                 if k.startswith(f"{who}|") for r in v)

    for (n, variant), row in zip(variants, rows):
      speedup = bench.ab_speedups(reports[n], variant, "default", whats)
      cells = [c.strip() for c in row.split("|")[2:5]]
      self.assertEqual(cells, [
          str(n), " / ".join(f"{speedup[w][0]:.2f}" for w in whats),
          f"{peak(reports[n], variant):.0f}"], row)
    self.assertIn(f"(glibc: {peak(reports[1], 'default'):.0f} / "
                  f"{peak(reports[2], 'default'):.0f})", doc)

  def test_run_g_table_and_readme_match_the_raw_numbers(self):
    bench = _load_benchmark("train_benchmark")
    with open(os.path.join(ROOT, "benchmarks",
                           "train_results_run_g.json")) as f:
      report = json.load(f)
    variants = [v for v in report["info"] if v != "torch"]
    whats = [f"{s}/{k}" for s in bench.SCENARIOS for k in ("train", "eval")]
    table = bench._markdown(report, variants, whats, True)
    with open(os.path.join(ROOT, "benchmarks", "train_results.md")) as f:
      results_md = f.read()
    rows = [line for line in table.splitlines() if line.startswith("|")]
    self.assertLen(rows, 2 + len(whats) * (len(variants) + 1))
    for row in rows:
      self.assertIn(row, results_md)

    def img_s(who):
      runs = report["runs"][f"{who}|cifar/train"]
      batch = bench.SCENARIOS["cifar"][2]
      return statistics.median(r["reps"] * batch / r["seconds"] for r in runs)

    with open(os.path.join(ROOT, "README.md")) as f:
      readme = " ".join(f.read().split())
    self.assertIn(f"({img_s('default'):.1f} vs {img_s('torch'):.1f} img/s;",
                  readme)


class MedianIntervalTest(absltest.TestCase):
  """The order-statistics interval the PyTorch benchmarks print per ratio."""

  def test_known_ranks_and_exact_coverage(self):
    import itertools  # pylint: disable=g-import-not-at-top
    interval = _load_benchmark("bench_model").median_interval
    # Textbook ranks of the 95 % interval of a median: n = 9 -> 2nd and
    # 8th, n = 21 -> 6th and 16th; below n = 6 the whole range.
    for n, (lo, hi) in ((5, (1, 5)), (6, (1, 6)), (9, (2, 8)),
                        (21, (6, 16))):
      got = interval(range(n, 0, -1))  # Unsorted input.
      self.assertEqual(got[:2], (lo, hi), n)
    # Coverage by enumeration: the median of a continuous distribution lies
    # in [x_(k), x_(n+1-k)] unless k or more of n fair signs fall on one
    # side; count the sign patterns for n = 9.
    n, k = 9, 2
    inside = sum(k <= sum(signs) <= n - k
                 for signs in itertools.product((0, 1), repeat=n))
    self.assertAlmostEqual(interval(range(n))[2], inside / 2**n)
    self.assertGreaterEqual(interval(range(n))[2], 0.95)
    self.assertEqual(interval([1.5])[:2], (1.5, 1.5))


class CommittedAttackResultsTest(absltest.TestCase):
  """Runs J-X: tables and README's PGD figures come from the JSON."""

  def _report_and_its_table(self, run, intervals=False):
    """The run's JSON; asserts its batch-256 table (and with `intervals` the
    per-row interval lines under it) is in attacks_results.md."""
    bench = _load_benchmark("attacks_benchmark")
    with open(os.path.join(ROOT, "benchmarks",
                           f"attacks_results_default_{run}.json")) as f:
      report = json.load(f)
    lines = bench._markdown(report, 256).splitlines()  # pylint: disable=protected-access
    table = [line for line in lines
             if line.startswith("| ") and "|---" not in line
             and "eps sweep" not in line]
    with open(os.path.join(ROOT, "benchmarks", "attacks_results.md")) as f:
      results_md = f.read()
    self.assertLen(table, 1 + len(report["rows"]))
    interval_lines = [line for line in lines if line.startswith("- ")]
    self.assertLen(interval_lines, sum(bool(r["torch"])
                                       for r in report["rows"]))
    for row in table + (interval_lines if intervals else []):
      self.assertIn(row, results_md)
    return report

  def _row(self, report, label="PGD-10 unrolled, 2 devices"):
    return [r for r in report["rows"] if r["label"] == label
            and r["chunk"] == 256][0]

  def _pgd_ratios(self, report, label="PGD-10 unrolled, 2 devices"):
    return _load_benchmark("attacks_benchmark").round_ratios(
        self._row(report, label))

  def _readme(self):
    with open(os.path.join(ROOT, "README.md")) as f:
      return " ".join(f.read().split())

  def test_run_j_table_and_readme_match_the_raw_numbers(self):
    report = self._report_and_its_table("run_j")
    readme = self._readme()
    ratio = statistics.median(self._pgd_ratios(report))
    self.assertIn(f"run J (the one with a lax row) {ratio:.2f}x", readme)
    lax_ratio = statistics.median(self._pgd_ratios(
        report, "PGD-10 unrolled, lax input gradients, 2 devices"))
    self.assertIn(f"lax's input gradients (the code before "
                  f"`models.input_grad`), timed in the same rounds, made "
                  f"{lax_ratio:.2f}x", readme)

  def test_runs_r_v_w_readme_figures(self):
    readme = self._readme()
    report = self._report_and_its_table("run_r")
    self.assertEqual(report["machine"]["glibc_tunables"],
                     "glibc.malloc.hugetlb=1")
    ratio = statistics.median(self._pgd_ratios(report))
    self.assertIn(f"a slow hour) {ratio:.2f}x", readme)
    for run, intervals in (("run_v", False), ("run_w", True)):
      report = self._report_and_its_table(run, intervals)
      self.assertStartsWith(report["machine"]["malloc"], "mimalloc")
      ratio = statistics.median(self._pgd_ratios(report))
      self.assertIn(f"run {run[-1].upper()} {ratio:.2f}x", readme)

  def test_run_x_and_the_pooled_rounds(self):
    interval = _load_benchmark("bench_model").median_interval
    report = self._report_and_its_table("run_x", intervals=True)
    self.assertStartsWith(report["machine"]["malloc"], "mimalloc")
    ratios = self._pgd_ratios(report)
    lo, hi, coverage = interval(ratios)
    row = self._row(report)
    img_s = lambda runs: 256 / statistics.median(r["seconds"] for r in runs)
    fgsm = statistics.median(self._pgd_ratios(report, "FGSM, 2 devices"))
    self.assertIn(
        f"PGD-10 L∞ **{statistics.median(ratios):.2f}x** torchattacks "
        f"({img_s(row['ours']):.1f} vs {img_s(row['torch']):.1f} img/s), the "
        f"median of {len(ratios)} per-round ratios, {coverage:.1%}".replace(
            "%", " %") + f" interval of the median {lo:.2f}-{hi:.2f}; FGSM "
        f"{fgsm:.2f}x", self._readme())
    pooled = []
    for run in ("run_v", "run_w", "run_x"):
      with open(os.path.join(ROOT, "benchmarks",
                             f"attacks_results_default_{run}.json")) as f:
        pooled += self._pgd_ratios(json.load(f))
    lo, hi, coverage = interval(pooled)
    with open(os.path.join(ROOT, "benchmarks", "attacks_results.md")) as f:
      results_md = " ".join(f.read().split())
    self.assertIn(
        f"All {len(pooled)} rounds on this code (runs V, W, X) together: "
        f"median {statistics.median(pooled):.2f}x, {coverage:.1%}".replace(
            "%", " %") + f" interval {lo:.2f}-{hi:.2f}", results_md)


if __name__ == "__main__":
  absltest.main()
