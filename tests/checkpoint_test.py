"""Checkpoints: damaged files, fallback to an older step, buckets.

A preempted write through gcsfuse or a full disk can leave a finished
checkpoint with truncated tensor files. The tests do exactly that (truncate
the data files of the newest step to half or zero bytes) and check that the
next restore falls back to the previous step, that the trainer resumes from
there to the same parameters as an uninterrupted run, and that when nothing
reads, the error is one paragraph naming the folder to remove. The same runs
on a `gs://` workdir through tests/fake_bucket.py.
"""

import glob
import os

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from configs import digits_resnet
from robustjax import checkpoint
from robustjax import train
from tests import fake_bucket


def _state(offset):
  return {"params": {"w": jnp.arange(300.0) + offset,
                     "b": jnp.full((4, 5), offset, jnp.float32)},
          "step": jnp.asarray(offset, jnp.int32)}


def _damage(step_dir, fraction=0.5):
  """Truncates every tensor data file of one checkpoint step."""
  files = [f for f in glob.glob(os.path.join(step_dir, "**", "d", "*"),
                                recursive=True) if os.path.isfile(f)]
  assert files, f"no tensor files under {step_dir}"
  for f in files:
    with open(f, "r+b") as fh:
      fh.truncate(int(os.path.getsize(f) * fraction))
  return files


def _save_steps(workdir, steps, keep=3):
  ckpt = checkpoint.Checkpointer(workdir, keep=keep)
  for s in steps:
    ckpt.save(s, _state(s))
  ckpt.close()


class DamagedCheckpointTest(parameterized.TestCase):

  @parameterized.parameters(0.5, 0.0)
  def test_falls_back_to_the_newest_readable_step(self, fraction):
    workdir = self.create_tempdir().full_path
    _save_steps(workdir, (4, 8, 12))
    _damage(os.path.join(workdir, "checkpoints", "12"), fraction)
    ckpt = checkpoint.Checkpointer(workdir, keep=3)
    self.assertEqual(ckpt.latest_step(), 12)
    with self.assertLogs(logger="absl", level="WARNING") as logs:
      state = ckpt.restore(checkpoint.abstract(_state(0)))
    self.assertEqual(int(state["step"]), 8)
    np.testing.assert_array_equal(state["params"]["w"], _state(8)["params"]["w"])
    warning = " ".join(logs.output)
    self.assertIn("Checkpoint step 12", warning)
    self.assertIn("damaged", warning)
    self.assertIn("resumed from step 8", warning)
    moved = os.path.join(workdir, checkpoint.DAMAGED_DIR, "step_12")
    self.assertIn(moved, warning)
    # The damaged step is set aside, not deleted; the manager moved on.
    self.assertTrue(os.path.isdir(moved))
    self.assertFalse(os.path.exists(os.path.join(workdir, "checkpoints",
                                                 "12")))
    self.assertEqual(ckpt.latest_step(), 8)
    # Training continues and saves step 12 again.
    ckpt.save(12, _state(112))
    ckpt.close()
    again = checkpoint.Checkpointer(workdir, keep=3)
    self.assertEqual(int(again.restore(checkpoint.abstract(_state(0)))
                         ["step"]), 112)
    again.close()

  def test_two_damaged_steps(self):
    workdir = self.create_tempdir().full_path
    _save_steps(workdir, (4, 8, 12))
    for step in ("8", "12"):
      _damage(os.path.join(workdir, "checkpoints", step))
    ckpt = checkpoint.Checkpointer(workdir, keep=3)
    with self.assertLogs(logger="absl", level="WARNING") as logs:
      state = ckpt.restore(checkpoint.abstract(_state(0)))
    self.assertEqual(int(state["step"]), 4)
    self.assertLen([l for l in logs.output if "is damaged" in l], 2)
    self.assertEqual(ckpt.latest_step(), 4)
    ckpt.close()

  def test_nothing_readable_names_the_folder_to_remove(self):
    workdir = self.create_tempdir().full_path
    _save_steps(workdir, (4, 8))
    for step in ("4", "8"):
      _damage(os.path.join(workdir, "checkpoints", step))
    ckpt = checkpoint.Checkpointer(workdir)
    with self.assertRaises(checkpoint.DamagedCheckpointError) as cm:
      ckpt.restore(checkpoint.abstract(_state(0)))
    message = str(cm.exception)
    directory = os.path.join(workdir, "checkpoints")
    self.assertEqual(cm.exception.path, directory)
    self.assertIn(f"Remove the folder {directory}", message)
    self.assertIn("step 8: ", message)
    self.assertIn("step 4: ", message)
    self.assertNotIn("\n", message)  # One paragraph.
    self.assertNotIn("TensorStore({", message)  # No raw spec dump.
    self.assertIsNone(cm.exception.__cause__)
    # Nothing was moved: the user decides.
    self.assertFalse(os.path.exists(os.path.join(workdir,
                                                 checkpoint.DAMAGED_DIR)))
    ckpt.close()

  def test_mismatch_is_not_called_damage(self):
    workdir = self.create_tempdir().full_path
    _save_steps(workdir, (4, 8))
    other = {"params": {"w": jnp.zeros(7)}, "step": jnp.int32(0)}
    ckpt = checkpoint.Checkpointer(workdir)
    with self.assertRaisesRegex(ValueError, "does not match this config"):
      ckpt.restore(checkpoint.abstract(other))
    self.assertEqual(ckpt.latest_step(), 8)  # Nothing set aside.
    ckpt.close()

  def test_damaged_saved_variables(self):
    root = self.create_tempdir().full_path
    model_dir = os.path.join(root, "prune_s0.5")
    path = os.path.join(model_dir, "variables")
    checkpoint.save_variables(path, _state(3))
    restored = checkpoint.load_variables(path, checkpoint.abstract(_state(0)))
    np.testing.assert_array_equal(restored["params"]["b"], 3)
    _damage(path)
    for kwargs, folder in (({}, path), ({"owner": model_dir}, model_dir)):
      with self.assertRaises(checkpoint.DamagedCheckpointError) as cm:
        checkpoint.load_variables(path, **kwargs)
      message = str(cm.exception)
      self.assertIn(f"Delete the folder {folder} and run again", message)
      self.assertIn(path, message)
      self.assertNotIn("\n", message)
      self.assertEqual(cm.exception.path, folder)
    with self.assertRaisesRegex(FileNotFoundError, "No saved variables"):
      checkpoint.load_variables(os.path.join(root, "missing"))


def _smoke_config(num_train_steps):
  c = digits_resnet.get_config("runlocal,model=resnet8,width=4")
  c.optimizer.schedule = "constant"
  c.num_train_steps = num_train_steps
  c.log_every_steps = 2
  c.eval_every_steps = 1000
  c.checkpoint_every_steps = 4
  return c


class TrainerResumeTest(absltest.TestCase):

  def test_rerun_resumes_from_the_previous_checkpoint(self):
    workdir = self.create_tempdir().full_path
    # Checkpoints at steps 4 and 8; the final state is the reference.
    reference = train.train_and_evaluate(_smoke_config(8), workdir)
    _damage(os.path.join(workdir, "checkpoints", "8"))
    with self.assertLogs(logger="absl", level="INFO") as logs:
      resumed = train.train_and_evaluate(_smoke_config(8), workdir)
    self.assertTrue(any("Checkpoint step 8" in l and "resumed from step 4" in l
                        for l in logs.output), logs.output)
    self.assertTrue(any("from step 4." in l for l in logs.output))
    self.assertEqual(int(resumed.step), 8)
    for x, y in zip(jax.tree.leaves(resumed), jax.tree.leaves(reference)):
      np.testing.assert_array_equal(x, y)  # Steps 5-8 retrained exactly.


class BucketTest(absltest.TestCase):
  """The same on a `gs://` workdir (tests/fake_bucket.py)."""

  def test_save_restore_fallback_in_a_bucket(self):
    root = self.create_tempdir().full_path
    url = "gs://bucket/runs/a"
    with fake_bucket.fake_gcs(root):
      _save_steps(url, (4, 8))
      ckpt = checkpoint.Checkpointer(url)
      self.assertEqual(str(ckpt.directory), url + "/checkpoints")
      self.assertEqual(ckpt.latest_step(), 8)
      ckpt.close()
      _damage(fake_bucket.local_path(url + "/checkpoints/8", root))
      ckpt = checkpoint.Checkpointer(url)
      with self.assertLogs(logger="absl", level="WARNING") as logs:
        state = ckpt.restore(checkpoint.abstract(_state(0)))
      self.assertEqual(int(state["step"]), 4)
      self.assertIn(url + "/damaged_checkpoints/step_8", " ".join(logs.output))
      ckpt.save(8, _state(108))
      ckpt.close()
      again = checkpoint.Checkpointer(url)
      self.assertEqual(int(again.restore(checkpoint.abstract(_state(0)))
                           ["step"]), 108)
      again.close()
      variables = url + "/model/variables"
      checkpoint.save_variables(variables, _state(5))
      np.testing.assert_array_equal(
          checkpoint.load_variables(variables)["params"]["b"], 5)
    # Everything landed in the bucket, nothing in the working directory.
    self.assertTrue(os.path.isdir(os.path.join(root, "bucket", "runs", "a",
                                               "checkpoints", "8")))
    self.assertTrue(os.path.isdir(os.path.join(root, "bucket", "runs", "a",
                                               "model", "variables")))
    self.assertFalse(os.path.exists("gs:"))


if __name__ == "__main__":
  absltest.main()
