"""The study end to end on `configs/default.py:runlocal`, and its resume."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

from absl.testing import absltest

from configs import default
from robustjax import cpu_setup
from robustjax import io
from robustjax.compress import saved
from robustjax.study import grid
from robustjax.study import journal as journal_lib
from robustjax.study import evaluation
from robustjax.study import runner
from robustjax.study import runtimes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))


def _key(r):
  return (r["model_id"], r["seed"], r["shift"], r["name"], r["level"])


def _by_key(rows):
  return {_key(r): r["accuracy"] for r in rows}


def _first_kernel(workdir, model_id, seed):
  """The first conv kernel of a model the study saved."""
  folder = os.path.join(workdir, "models",
                        f"{model_id.replace('/', '__')}__s{seed}")
  return np.asarray(saved.load(folder).variables["params"]["conv_init"]
                    ["kernel"])


class StudyTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    cls.config = default.get_config("runlocal")
    cls.workdir = os.path.join(cls.root, "full")
    t = time.time()
    cls.rows = runner.run_study(cls.config, cls.workdir)
    cls.seconds = time.time() - t

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def test_grid_is_complete_and_rows_validate(self):
    specs = grid.model_specs(self.config)
    e = self.config.evals
    per_model = (1 + len(self.config.dataset.targets) +
                 len(e.corruptions.names) * len(e.corruptions.severities) +
                 len(e.attacks.names) * len(e.attacks.eps))
    transfer = len(e.attacks.names) * len(e.attacks.eps)
    compressed = sum(s.method != "original" for s in specs)
    self.assertLen(self.rows, (len(specs) * per_model + compressed * transfer)
                   * self.config.study.seeds)
    # Every compressed model is also attacked from its float original.
    names = {r["name"] for r in self.rows if r["method"] != "original"}
    self.assertLessEqual({"transfer_fgsm", "transfer_pgd_linf"}, names)
    methods = {r["method"] for r in self.rows}
    self.assertEqual(methods, {"original", "prune", "quantize", "distill",
                               "distill_control", "replicate"})
    for r in self.rows:
      runner.validate_row(r)
    on_disk = io.read_jsonl(os.path.join(self.workdir,
                                               runner.RESULTS))
    self.assertEqual(_by_key(on_disk), _by_key(self.rows))

  def test_replicate_is_an_independently_trained_original(self):
    # The negative control: the original's recipe from another seed,
    # evaluated like a compressed model (transfer attacks included).
    rid, oid = "resnet8-w8/replicate", "resnet8-w8/original"
    replicate = [r for r in self.rows if r["model_id"] == rid]
    original = [r for r in self.rows if r["model_id"] == oid]
    self.assertEqual({r["seed"] for r in replicate},
                     set(grid.seeds(self.config)))
    self.assertEqual({(r["method"], r["original_id"], r["arch"]) for r in
                      replicate}, {("replicate", oid, "resnet8:8")})
    self.assertEqual({r["size_bits"] for r in replicate},
                     {r["size_bits"] for r in original})
    names = {r["name"] for r in replicate}
    self.assertLessEqual({"transfer_fgsm", "transfer_pgd_linf"}, names)
    self.assertEqual(names - {"transfer_fgsm", "transfer_pgd_linf"},
                     {r["name"] for r in original})
    for seed in grid.seeds(self.config):
      a, b = (_first_kernel(self.workdir, m, seed) for m in (rid, oid))
      self.assertEqual(a.shape, b.shape)
      self.assertFalse(np.array_equal(a, b), seed)

  def test_eps_zero_equals_clean_on_the_same_examples(self):
    journal = journal_lib.Journal(os.path.join(self.workdir, runner.JOURNAL))
    examples = journal_lib.examples_of(journal)
    attack_n = self.config.evals.attacks.max_examples
    checked = 0
    for r in self.rows:
      if r["shift"] != "adversarial" or r["level"] != 0.0:
        continue
      clean = examples[(r["model_id"], r["seed"], "clean", "source")]
      self.assertEqual(r["n"], attack_n)
      self.assertLess(attack_n, clean.shape[1])  # A real subset.
      adv = examples[(r["model_id"], r["seed"], "adversarial", r["name"])]
      # eps = 0 is classified by the clean program at the clean batch size:
      # bit-identical for float and integer-quantized models alike.
      np.testing.assert_array_equal(adv[0], clean[0, :attack_n], str(r))
      self.assertEqual(r["accuracy"], clean[0, :attack_n].mean())
      checked += 1
    self.assertGreaterEqual(checked, 5)

  def test_per_example_bits_reproduce_every_row(self):
    journal = journal_lib.Journal(os.path.join(self.workdir, runner.JOURNAL))
    examples = journal_lib.examples_of(journal)
    for r in self.rows:
      bits = examples[(r["model_id"], r["seed"], r["shift"], r["name"])]
      levels = sorted({x["level"] for x in self.rows if
                       (x["model_id"], x["shift"], x["name"]) ==
                       (r["model_id"], r["shift"], r["name"])},
                      key=lambda v: -1 if v is None else v)
      self.assertEqual(bits.shape, (len(levels), r["n"]))
      self.assertEqual(bits[levels.index(r["level"])].mean(), r["accuracy"])

  def test_outputs(self):
    for name in ("results.csv", "report.md", "config.json"):
      self.assertTrue(os.path.exists(os.path.join(self.workdir, name)), name)
    report = open(os.path.join(self.workdir, "report.md")).read()
    self.assertIn("## Claims", report)
    for claim in ("(a)", "(b)", "(c)", "(d)"):
      self.assertIn(f"### {claim}", report)
    plots = os.listdir(os.path.join(self.workdir, "plots"))
    self.assertGreaterEqual(len([p for p in plots if p.endswith(".png")]), 3)
    with open(os.path.join(self.workdir, "results.csv")) as f:
      self.assertLen(f.readlines(), len(self.rows) + 1)
    # The XLA flags are recorded: they move float rounding.
    env = json.load(open(os.path.join(self.workdir, "environment.json")))
    self.assertEqual(env["xla_flags"], os.environ.get("XLA_FLAGS", ""))
    self.assertEqual(env["malloc"], cpu_setup.cpu_malloc_in_use())
    self.assertEqual(env["code"], runner.code_version())
    # The precision the models ran in is in environment.json and the report.
    self.assertIn(env["precision"], ("f32", "tf32", "bf16", "bf16_3x"))
    self.assertIn(f"precision {env['precision']} (float32 matmuls: "
                  f"{env['float32_matmuls']})", report)
    # Each run segment records the process's peak memory.
    segment = io.read_jsonl(os.path.join(self.workdir, runner.TIMING))[0]
    self.assertGreater(segment["peak_rss_mb"], 50)

  def test_runtime_ledger_record_of_the_finished_run(self):
    # The run compared with itself, then with "committed" results in which
    # one accuracy moved, then unfinished: what --add_run would record.
    segments = io.read_jsonl(os.path.join(self.workdir, runner.TIMING))
    record = runtimes.record_of(self.workdir, self.workdir, "test run")
    self.assertEqual(record["results"], "identical")
    self.assertEqual(record["segments"], len(segments))
    self.assertAlmostEqual(record["wall_s"], sum(
        s["total"]["wall_s"] for s in segments), places=2)
    self.assertEqual((record["machine"], record["code"], record["source"]),
                     (segments[-1]["machine"], runner.code_version(),
                      "test run"))
    self.assertEqual(record["peak_rss_mb"], segments[-1]["peak_rss_mb"])
    committed = os.path.join(self.root, "ledger_committed")
    shutil.copytree(self.workdir, committed)
    csv_path = os.path.join(committed, "results.csv")
    with open(csv_path) as f:
      lines = f.read().splitlines(True)
    header = lines[0].strip().split(",")
    fields = lines[1].rstrip("\n").split(",")
    acc = header.index("accuracy")
    fields[acc] = str(1.0 - float(fields[acc]))
    lines[1] = ",".join(fields) + "\n"
    with open(csv_path, "w") as f:
      f.writelines(lines)
    self.assertEqual(
        runtimes.record_of(self.workdir, committed, "x")["results"],
        f"1 of {len(self.rows)} rows differ")
    unfinished = os.path.join(self.root, "ledger_unfinished")
    shutil.copytree(self.workdir, unfinished)
    progress = os.path.join(unfinished, "progress.json")
    total = json.load(open(progress))["cells_total"]
    io.write_json(progress, {"cells_total": total + 1})
    with self.assertRaisesRegex(ValueError, f"not finished \\({total} of "
                                f"{total + 1} cells\\): re-run"):
      runtimes.record_of(unfinished, self.workdir, "x")

  def test_report_only_rerun_reproduces_the_report_byte_for_byte(self):
    workdir = os.path.join(self.root, "report_only")
    shutil.copytree(self.workdir, workdir)
    report = os.path.join(workdir, "report.md")
    with open(report, "rb") as f:
      before = f.read()
    os.remove(report)
    rows = runner.run_study(self.config, workdir)
    with open(report, "rb") as f:
      self.assertEqual(f.read(), before)
    self.assertEqual(_by_key(rows), _by_key(self.rows))
    # No model work: the rerun's time went to loading and the report only.
    segments = io.read_jsonl(os.path.join(workdir, runner.TIMING))
    self.assertLen(segments, 2)
    self.assertEqual(segments[-1]["cells"], 0)
    self.assertFalse([s for s in segments[-1]["stages"]
                      if s.startswith(("build/", "evaluate/"))])
    self.assertIn("build/original", segments[0]["stages"])

  def test_resume_skips_finished_cells_and_reproduces_results(self):
    workdir = os.path.join(self.root, "resume")
    shutil.copytree(self.workdir, workdir)
    path = os.path.join(workdir, runner.JOURNAL)
    lines = open(path).read().splitlines(keepends=True)
    kept = lines[:len(lines) // 2]
    # Half the cells, a torn last line, and one model to be rebuilt.
    with open(path, "w") as f:
      f.writelines(kept)
      f.write('{"key": "torn')
    victim = sorted(os.listdir(os.path.join(workdir, "models")))[-1]
    shutil.rmtree(os.path.join(workdir, "models", victim))
    calls = []
    original = evaluation.record_cell

    def counting(journal, key, *args):
      calls.append(key)
      return original(journal, key, *args)
    evaluation.record_cell = counting
    try:
      rows = runner.run_study(self.config, workdir)
    finally:
      evaluation.record_cell = original
    self.assertLen(calls, len(lines) - len(kept))
    self.assertEqual(_by_key(rows), _by_key(self.rows))
    # The journal was compacted: no torn line left, one line per cell.
    self.assertLen(io.read_jsonl(path), len(lines))

  def test_sigkill_then_rerun_finishes_with_same_results(self):
    workdir = os.path.join(self.root, "killed")
    cmd = [sys.executable, os.path.join(REPO, "launch", "study.py"),
           "--config=" + os.path.join(REPO, "configs", "default.py") +
           ":runlocal", "--workdir=" + workdir,
           # JAX's default single CPU device, as in this test process, so the
           # numbers can be compared with self.rows.
           "--cpu_devices=0"]
    path = os.path.join(workdir, runner.JOURNAL)
    cells = len(journal_lib.Journal(
        os.path.join(self.workdir, runner.JOURNAL)))
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
      if len(io.read_jsonl(path)) >= cells // 3:
        break
      time.sleep(0.2)
    self.assertIsNone(proc.poll(), "the study ended before it was killed")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    self.assertLess(len(io.read_jsonl(path)), cells)
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                          timeout=900)
    self.assertEqual(done.returncode, 0, done.stderr[-3000:])
    self.assertIn("already done", done.stderr)
    rows = runner.load_results(workdir)
    self.assertEqual(_by_key(rows), _by_key(self.rows))


if __name__ == "__main__":
  absltest.main()
