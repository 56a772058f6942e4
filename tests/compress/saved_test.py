"""Tests for robustjax.compress.saved: verified saves, damaged models named.

The study's recovery (a damaged model moved aside and rebuilt) is in
tests/study/runner_recovery_test.py.
"""

import json
import os
import shutil
from unittest import mock

from absl.testing import absltest
import numpy as np

from robustjax import checkpoint
from robustjax.compress import saved

SPEC = {"dataset": "digits", "name": "resnet8", "num_classes": 10,
        "width": 4}


def _variables(offset=0.0):
  return {"params": {"conv": {"kernel": np.arange(24.0).reshape(2, 3, 4)
                              + offset},
                     "dense": {"bias": np.full(10, offset, np.float32)}},
          "batch_stats": {"bn": {"mean": np.zeros(4, np.float32)}}}


class SavedTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.folder = os.path.join(self.create_tempdir().full_path, "m__s0")
    saved.save(self.folder, _variables(1.0), {"model": SPEC,
                                               "method": "prune"})

  def test_save_records_the_checksum_and_leaves_no_temporary_folder(self):
    self.assertEqual(sorted(os.listdir(self.folder)),
                     [saved.METADATA, saved.VARIABLES])
    meta = json.load(open(os.path.join(self.folder, saved.METADATA)))
    self.assertEqual(meta["checksum"],
                     checkpoint.tree_checksum(_variables(1.0)))
    model = saved.load(self.folder)
    np.testing.assert_array_equal(
        model.variables["params"]["conv"]["kernel"],
        _variables(1.0)["params"]["conv"]["kernel"])
    self.assertEqual(model.metadata["method"], "prune")

  def test_checksum_ignores_containers_but_not_values(self):
    a = checkpoint.tree_checksum({"x": [np.ones(2), np.zeros(3)]})
    self.assertEqual(a, checkpoint.tree_checksum({"x": (np.ones(2),
                                                        np.zeros(3))}))
    self.assertNotEqual(a, checkpoint.tree_checksum(
        {"x": [np.ones(2), np.ones(3)]}))
    self.assertNotEqual(a, checkpoint.tree_checksum(
        {"x": [np.ones(2, np.float16), np.zeros(3)]}))

  def _assert_damaged(self, reason):
    with self.assertRaises(saved.DamagedModelError) as cm:
      saved.load(self.folder)
    self.assertIn(reason, cm.exception.reason)
    self.assertIn(f"The saved model {self.folder} is damaged", str(
        cm.exception))
    self.assertEqual(cm.exception.path, self.folder)
    self.assertIsInstance(cm.exception, checkpoint.DamagedCheckpointError)

  def test_variables_deleted(self):
    shutil.rmtree(os.path.join(self.folder, saved.VARIABLES))
    self.assertTrue(saved.is_done(self.folder))  # Marked, yet damaged.
    self._assert_damaged("it has no variables/ folder")

  def test_metadata_not_json(self):
    with open(os.path.join(self.folder, saved.METADATA), "w") as f:
      f.write("\x00\x00garbage{")
    self._assert_damaged("compression.json is not JSON")

  def test_metadata_without_a_model(self):
    with open(os.path.join(self.folder, saved.METADATA), "w") as f:
      json.dump({"method": "prune"}, f)
    self._assert_damaged("compression.json names no model")

  def test_variables_that_differ_from_the_checksum(self):
    other = os.path.join(os.path.dirname(self.folder), "other")
    saved.save(other, _variables(2.0), {"model": SPEC})
    shutil.rmtree(os.path.join(self.folder, saved.VARIABLES))
    shutil.copytree(os.path.join(other, saved.VARIABLES),
                    os.path.join(self.folder, saved.VARIABLES))
    self._assert_damaged("differ from the checksum")

  def test_emptied_variables(self):
    variables = os.path.join(self.folder, saved.VARIABLES)
    shutil.rmtree(variables)
    os.makedirs(variables)
    self._assert_damaged("cannot be read")

  def test_set_aside_keeps_every_damaged_copy(self):
    first = saved.set_aside(self.folder)
    self.assertEqual(first, self.folder + ".damaged-1")
    self.assertFalse(os.path.exists(self.folder))
    saved.save(self.folder, _variables(), {"model": SPEC})
    self.assertEqual(saved.set_aside(self.folder), self.folder + ".damaged-2")
    self.assertTrue(os.path.isdir(first))

  def test_a_save_that_does_not_read_back_keeps_nothing(self):
    folder = os.path.join(os.path.dirname(self.folder), "bad")
    real = checkpoint.tree_checksum
    calls = []

    def flaky(tree):  # The read-back sums differently: lost data.
      calls.append(1)
      return real(tree) if len(calls) == 1 else "0" * 64
    with mock.patch.object(checkpoint, "tree_checksum", flaky):
      with self.assertRaisesRegex(checkpoint.DamagedCheckpointError,
                                  "do not read back as written"):
        saved.save(folder, _variables(), {"model": SPEC})
    self.assertEqual(os.listdir(folder), [])  # No marker, no variables.
    self.assertFalse(saved.is_done(folder))

  def test_a_save_cut_short_is_redone(self):
    # Leftovers of a killed save: a temporary folder and unmarked variables.
    folder = os.path.join(os.path.dirname(self.folder), "cut")
    checksum = checkpoint.tree_checksum(_variables())
    os.makedirs(os.path.join(folder, f".variables.tmp-{checksum[:16]}", "x"))
    os.makedirs(os.path.join(folder, saved.VARIABLES, "y"))
    saved.save(folder, _variables(), {"model": SPEC})
    self.assertEqual(sorted(os.listdir(folder)),
                     [saved.METADATA, saved.VARIABLES])
    saved.load(folder)


if __name__ == "__main__":
  absltest.main()
