"""The study report: partial re-rendering, seeds and error bars."""

import csv
import json
import os

from absl.testing import absltest

from robustjax import io
from robustjax.study import report


def model_rows(model_id, arch, method, size_bits, clean, corruption,
               adversarial, seed=None, original_id=None):
  """Rows of one model: clean, a domain, fog 1-2, PGD at eps 0 and 0.1."""
  base = dict(model_id=model_id, arch=arch, method=method, setting={},
              size_bits=size_bits, sparsity=0.0, original_id=original_id,
              n=100)
  if seed is not None:
    base["seed"] = seed
  return [dict(base, shift="clean", name="source", level=None,
               accuracy=clean),
          dict(base, shift="domain", name="uci", level=None,
               accuracy=clean - 0.2),
          dict(base, shift="corruption", name="fog", level=1,
               accuracy=corruption),
          dict(base, shift="corruption", name="fog", level=2,
               accuracy=corruption - 0.1),
          dict(base, shift="adversarial", name="pgd_linf", level=0.0,
               accuracy=clean),
          dict(base, shift="adversarial", name="pgd_linf", level=0.1,
               accuracy=adversarial)]


def grid_rows(seeds=(None,)):
  """Two archs, each with its original and one compressed model, per seed."""
  rows = []
  for i, seed in enumerate(seeds):
    d = 0.02 * i
    rows += model_rows("a/original", "a:16", "original", 4e6, 0.9 + d, 0.7,
                       0.4, seed)
    rows += model_rows("a/prune", "a:16", "prune", 1e6, 0.88, 0.6 + d, 0.3,
                       seed, "a/original")
    rows += model_rows("b/original", "b:8", "original", 1e6, 0.85, 0.6,
                       0.3 + d, seed)
    rows += model_rows("b/ptq", "b:8", "quantize", 3e5, 0.84, 0.58, 0.28,
                       seed, "b/original")
  return rows


class RenderTest(absltest.TestCase):

  def _workdir(self, rows, cells_total=None):
    workdir = self.create_tempdir().full_path
    io.append_jsonl(os.path.join(workdir, "results.jsonl"), rows)
    io.write_json(os.path.join(workdir, "config.json"),
                  {"study_name": "toy grid"})
    if cells_total is not None:
      report.write_progress(workdir, cells_total)
    return workdir

  def test_partial_run_is_marked(self):
    rows = grid_rows()
    done = [r for r in rows if r["model_id"] != "b/ptq"]  # 3 of 4 models.
    # A torn last line (a run killed mid-write) is ignored.
    workdir = self._workdir(done, cells_total=16)
    with open(os.path.join(workdir, "results.jsonl"), "a") as f:
      f.write('{"model_id": "b/pt')
    path = report.render(workdir)
    text = open(path).read()
    self.assertTrue(text.startswith("# Robustness study report: toy grid"))
    self.assertIn("**Partial: 12 of 16 cells (75 %).**", text)
    self.assertIn("## Claims", text)
    self.assertIn("| a/prune |", text)
    self.assertNotIn("| b/ptq |", text)
    with open(os.path.join(workdir, "results.csv")) as f:
      self.assertLen(list(csv.DictReader(f)), len(done))
    self.assertCountEqual(
        os.listdir(os.path.join(workdir, "plots")),
        ["accuracy_vs_size.png", "accuracy_vs_severity.png",
         "accuracy_vs_eps.png", "claims_forest.png"])

  def test_complete_and_unknown(self):
    rows = grid_rows()
    text = open(report.render(self._workdir(rows, cells_total=16))).read()
    self.assertIn("Complete: 16 of 16 cells.", text)
    text = open(report.render(self._workdir(rows))).read()
    self.assertIn("**Completeness unknown:** 16 cells", text)

  def test_duplicates_last_write_wins(self):
    rows = grid_rows()
    again = dict(rows[0], accuracy=0.5)  # a/original clean, rewritten.
    workdir = self._workdir(rows + [again])
    self.assertLen(report.read_rows(workdir), len(rows))
    clean = [r for r in report.read_rows(workdir)
             if r["model_id"] == "a/original" and r["shift"] == "clean"]
    self.assertEqual(clean[0]["accuracy"], 0.5)

  def test_seed_column_in_csv(self):
    workdir = self._workdir(grid_rows(seeds=(0, 1)))
    report.render(workdir)
    with open(os.path.join(workdir, "results.csv")) as f:
      seeds = {r["seed"] for r in csv.DictReader(f)}
    self.assertEqual(seeds, {"0", "1"})
    self.assertIn("mean over seeds (2 seeds per model)",
                  open(os.path.join(workdir, "report.md")).read())

  def test_empty_workdir_says_what_to_do(self):
    with self.assertRaisesRegex(FileNotFoundError, "Run launch/study.py"):
      report.render(self.create_tempdir().full_path)

  def test_progress_file(self):
    workdir = self.create_tempdir().full_path
    report.write_progress(workdir, 266, models_total=14)
    with open(os.path.join(workdir, report.PROGRESS)) as f:
      self.assertEqual(json.load(f), {"cells_total": 266, "models_total": 14})


if __name__ == "__main__":
  absltest.main()
