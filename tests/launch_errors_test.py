"""Bad values through the launchers: one sentence, exit status 1, no work.

Each case runs a launcher as a user would (a subprocess) with one bad value
and checks the single-sentence error that names the field, the value and
what is valid, and that no workdir content was produced.
"""

import io as stdio
import os
import subprocess
import sys
import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized

from robustjax import io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CASES = (
    ("negative_eps", "study.py", "default.py:runlocal",
     ["--config.evals.attacks.eps=(-0.1,)"],
     "evals.attacks.eps=(-0.1,) must hold finite budgets >= 0"),
    ("infinite_eps", "study.py", "default.py:runlocal",
     ["--config.evals.attacks.eps=(1e999,)"],
     "evals.attacks.eps=(inf,) must hold finite budgets"),
    ("zero_batch", "train.py", "digits_resnet.py:runlocal",
     ["--config.batch_size=0"],
     "config.batch_size=0 is not valid: use a positive number"),
    ("severity", "study.py", "default.py:runlocal",
     ["--config.evals.corruptions.severities=(0,6)"],
     "evals.corruptions.severities=(0, 6) must hold severities in 1..5"),
    ("sparsity", "study.py", "default.py:runlocal",
     ["--config.study.prune.sparsities=(1.0,)"],
     "config.study.prune.sparsities=(1.0,) is not valid: sparsities are "
     "numbers in [0, 1)"),
    ("init_sparsity", "train.py", "digits_resnet.py:runlocal",
     ["--config.compress.init_sparsity=-0.5"],
     "config.compress.init_sparsity=-0.5 is not valid"),
    ("bits", "compress.py", "digits_compress.py:runlocal",
     ["--config.study.quantize.weight_bits=(16,)"],
     "config.study.quantize.weight_bits=(16,) is not valid: AQT quantizes "
     "weights to 2..8 bits"),
    ("act_bits", "study.py", "default.py:runlocal",
     ["--config.compress.act_bits=12"],
     "config.compress.act_bits=12 is not valid: AQT quantizes activations"),
    ("missing_file", "study.py", "nope.py", [],
     "configs/nope.py: no such config file"),
    ("unknown_field", "train.py", "digits_resnet.py:runlocal",
     ["--config.pruning.sparsity=0.9"],
     "the config has no field 'pruning'"),
    ("unknown_model", "train.py", "digits_resnet.py:runlocal",
     ["--config.model.name=resnet9"],
     "config.model.name='resnet9' is not valid: registered models are"),
    ("unknown_corruption", "evaluate.py", "default.py:runlocal",
     ["--config.evals.corruptions.names=('fogg',)"],
     "evals.corruptions.names names an unknown corruption 'fogg'; valid "
     "names: gaussian_noise,"),
    ("unknown_dataset", "train.py", "digits_resnet.py:runlocal",
     ["--config.dataset.name=digitz"],
     "config.dataset.name='digitz' is not valid: registered datasets are "
     "cifar10, cifar10_corrupted, digits,"),
    ("unknown_arch", "study.py", "default.py:runlocal",
     ["--config.study.distill.students=('resnet9:4',)"],
     "config.study.distill.students=('resnet9:4',) is not valid: write "
     "'name:width' with a registered model"),
)


class LaunchErrorsTest(parameterized.TestCase):

  @parameterized.named_parameters(*CASES)
  def test_one_sentence_and_no_work(self, launcher, config, extra, message):
    workdir = os.path.join(tempfile.mkdtemp(), "w")
    cmd = [sys.executable, os.path.join(ROOT, "launch", launcher),
           f"--config={os.path.join('configs', config)}",
           f"--workdir={workdir}", *extra]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)
    self.assertEqual(proc.returncode, 1, proc.stderr[-2000:])
    fatal = [l for l in proc.stderr.splitlines() if l.startswith("FATAL")]
    self.assertLen(fatal, 1, proc.stderr[-2000:])
    self.assertIn(message, fatal[0])
    self.assertNotIn("Traceback", proc.stderr)
    self.assertFalse(os.path.exists(os.path.join(workdir, "config.json")))


class FatalErrorsTest(absltest.TestCase):
  """launch/common.fatal_errors: what a user must act on, in one line."""

  def _fatal_line(self, error):
    from launch import common  # pylint: disable=g-import-not-at-top
    stderr = stdio.StringIO()
    with mock.patch.object(sys, "stderr", stderr):
      with self.assertRaises(SystemExit) as cm:
        with common.fatal_errors("/w"):
          raise error
    self.assertEqual(cm.exception.code, 1)
    lines = stderr.getvalue().splitlines()
    self.assertLen(lines, 1)
    self.assertTrue(lines[0].startswith("FATAL "), lines[0])
    return lines[0]

  def test_disk_full_deep_in_a_library(self):
    line = self._fatal_line(ValueError(
        "DATA_LOSS: Error writing local file \"/w/train/checkpoints/8/d/x\": "
        "[OS error 28: No space left on device] " + "x" * 700))
    self.assertEqual(line, "FATAL No space left on device (ENOSPC) writing "
                     "the workdir: what was saved before is kept in /w; free "
                     "disk space and rerun the same command to resume from "
                     "there.")

  def test_storage_error_of_the_study_is_printed_as_it_is(self):
    line = self._fatal_line(io.StorageError("No space left on device (ENOSPC) "
                                            "writing /w/j: 3 cells are saved "
                                            "in /w/j; free disk space."))
    self.assertEqual(line, "FATAL No space left on device (ENOSPC) writing "
                     "/w/j: 3 cells are saved in /w/j; free disk space.")

  def test_other_errors_keep_their_traceback(self):
    from launch import common  # pylint: disable=g-import-not-at-top
    with self.assertRaises(KeyError):
      with common.fatal_errors("/w"):
        raise KeyError("x")


if __name__ == "__main__":
  absltest.main()
