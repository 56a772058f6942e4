"""Tests for robustjax.study.journal: the one resumable record."""

import os

from absl.testing import absltest
import numpy as np

from robustjax.study import journal as journal_lib


class JournalTest(absltest.TestCase):

  def test_add_reopen_replace_and_arrays(self):
    path = os.path.join(self.create_tempdir().full_path, "j.jsonl")
    j = journal_lib.Journal(path)
    self.assertEmpty(j)
    j.add("a", {"rows": [1, 2]}, arrays={"x": np.arange(5)})
    j.add("b", {"rows": [3]})
    j.add("a", {"rows": [9]}, arrays={"x": np.arange(3)})  # Replaces "a".
    again = journal_lib.Journal(path)
    self.assertEqual(again.keys(), ["b", "a"])  # Re-added: last.
    self.assertEqual(again.get("a")["rows"], [9])
    np.testing.assert_array_equal(again.arrays("a")["x"], np.arange(3))
    self.assertEqual(again.arrays("b"), {})
    self.assertIn("b", again)
    self.assertNotIn("c", again)

  def test_torn_last_line_is_dropped_and_compacted_away(self):
    path = os.path.join(self.create_tempdir().full_path, "j.jsonl")
    j = journal_lib.Journal(path)
    j.add("a", {"v": 1})
    j.add("a", {"v": 2})
    with open(path, "a") as f:
      f.write('{"key": "b", "v"')  # A crash mid-write.
    again = journal_lib.Journal(path)
    self.assertEqual(again.keys(), ["a"])
    again.add("c", {"v": 3})  # Appends on a fresh line.
    self.assertEqual(journal_lib.Journal(path).keys(), ["a", "c"])
    again.compact()
    with open(path) as f:
      lines = f.read().splitlines()
    self.assertLen(lines, 2)
    self.assertEqual(journal_lib.Journal(path).get("a")["v"], 2)

  def test_arrays_are_written_before_the_record(self):
    folder = self.create_tempdir().full_path
    path = os.path.join(folder, "j.jsonl")
    j = journal_lib.Journal(path)
    record = j.add("k", {"rows": []}, arrays={"bits": np.ones(4, bool)})
    self.assertTrue(os.path.exists(os.path.join(
        folder, "j.arrays", record["arrays"] + ".npz")))


if __name__ == "__main__":
  absltest.main()
