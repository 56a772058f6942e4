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

  def test_arrays_travel_inside_the_record(self):
    path = os.path.join(self.create_tempdir().full_path, "j.jsonl")
    bits = np.packbits(np.arange(13) % 3 == 0)
    journal_lib.Journal(path).add("k", {"rows": []}, arrays={"bits": bits})
    self.assertEqual(os.listdir(os.path.dirname(path)), ["j.jsonl"])
    got = journal_lib.Journal(path).arrays("k")["bits"]
    np.testing.assert_array_equal(got, bits)
    self.assertEqual(got.dtype, np.uint8)


if __name__ == "__main__":
  absltest.main()
