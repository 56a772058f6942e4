"""A study whose workdir is a bucket (`gs://...`) completes and resumes.

Runs a tiny `configs/default.py:runlocal` grid (one arch, one seed, one
pruned model, a few cells) with `gs://bkt/study` as the workdir inside the
`gs://` test double (tests/fake_bucket.py): every file of the run (training
runs, checkpoints, saved models, journal, results, report, plots) must go
through the bucket, nothing may land in a local `gs:` folder, and a second
call must resume without training or evaluating anything.
"""

import os
from unittest import mock

from absl.testing import absltest

from configs import default
from robustjax import io
from robustjax.study import report as report_lib
from robustjax.study import evaluation
from robustjax.study import runner
from robustjax.train import trainer
from tests import fake_bucket

URL = "gs://bkt/study"


def _config():
  c = default.get_config("runlocal")
  c.study.archs = ("resnet8:4",)
  c.study.seeds = 1
  c.study.prune.sparsities = (0.9,)
  c.study.quantize.weight_bits = ()
  c.study.distill.teacher = ""
  c.study.distill.students = ()
  c.study.negative_control = ""
  c.evals.corruptions.names = ("contrast",)
  c.evals.corruptions.severities = (3,)
  c.evals.attacks.names = ("fgsm",)
  c.evals.attacks.eps = (0.1,)
  c.evals.attacks.max_examples = 16
  c.evals.attacks.transfer = False
  return c


def _key(r):
  return (r["model_id"], r["seed"], r["shift"], r["name"], r["level"])


class BucketStudyTest(absltest.TestCase):

  def test_study_in_a_bucket_completes_and_resumes(self):
    root = self.create_tempdir("buckets").full_path
    cwd = self.create_tempdir("cwd").full_path
    config = _config()
    old_cwd = os.getcwd()
    os.chdir(cwd)  # A path mistaken for a local one would land here.
    self.addCleanup(os.chdir, old_cwd)
    with fake_bucket.fake_gcs(root):
      rows = runner.run_study(config, URL)
      # 2 models x (clean, domain uci, contrast@3, fgsm@0.1).
      self.assertLen(rows, 8)
      self.assertEqual({r["method"] for r in rows}, {"original", "prune"})
      for name in ("config.json", report_lib.ENVIRONMENT,
                   report_lib.PROGRESS, report_lib.RESULTS, "results.csv",
                   "report.md", "plots/accuracy_vs_size.png",
                   "plots/accuracy_vs_severity.png",
                   "plots/accuracy_vs_eps.png"):
        self.assertTrue(io.exists(f"{URL}/{name}"), name)
      png = io.as_path(f"{URL}/plots/accuracy_vs_size.png").read_bytes()
      self.assertEqual(png[:8], b"\x89PNG\r\n\x1a\n")
      self.assertIn("Complete: 8 of 8 cells.",
                    io.read_text(f"{URL}/report.md"))
      on_disk = io.read_jsonl(f"{URL}/{report_lib.RESULTS}")
      self.assertEqual({_key(r): r["accuracy"] for r in on_disk},
                       {_key(r): r["accuracy"] for r in rows})
      models = io.as_path(f"{URL}/models")
      folders = sorted(p.name for p in models.iterdir())
      self.assertLen(folders, 2)
      for folder in folders:
        self.assertTrue(io.exists(f"{URL}/models/{folder}/compression.json"))
        train = f"{URL}/models/{folder}/train"
        for name in ("config.json", "final_metrics.json", "metrics.jsonl"):
          self.assertTrue(io.exists(f"{train}/{name}"), f"{folder}: {name}")
        self.assertNotEmpty(io.read_jsonl(f"{train}/metrics.jsonl"))
      # Not in buckets (append-only files): the log file and TensorBoard.
      self.assertFalse(io.exists(f"{URL}/log.txt"))
      self.assertFalse(io.exists(f"{URL}/tb"))
      # The journal is one object per record (no append on object stores).
      self.assertLen(io.read_records(f"{URL}/journal.records"), 8)

      # Resume: nothing left to build or evaluate; the same rows back.
      with mock.patch.object(trainer, "train_and_evaluate",
                             side_effect=AssertionError("trained")), \
           mock.patch.object(evaluation, "record_cell",
                             side_effect=AssertionError("evaluated")):
        again = runner.run_study(config, URL)
      self.assertEqual(again, rows)
    self.assertEqual(os.listdir(cwd), [])
    self.assertTrue(os.path.isdir(os.path.join(root, "bkt", "study")))


if __name__ == "__main__":
  absltest.main()
