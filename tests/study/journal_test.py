"""Tests for robustjax.study.journal: the one resumable record."""

import json
import os

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from robustjax import io
from robustjax.study import journal as journal_lib
from tests import fake_bucket


def _cell(journal, key, acc=0.5, n=10):
  correct = np.arange(n) % 2 == 0
  return journal.add(key, {"rows": [{"shift": "clean", "name": "source",
                                     "level": None, "accuracy": acc,
                                     "n": n}]},
                     arrays={"correct": np.packbits(correct[None], axis=-1),
                             "shape": np.asarray([1, n])})


class JournalTest(parameterized.TestCase):

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

  def test_torn_line_is_cut_off_by_the_next_add(self):
    path = os.path.join(self.create_tempdir().full_path, "j.jsonl")
    journal_lib.Journal(path).add("a", {"v": 1})
    with open(path, "a") as f:
      f.write('{"key": "b", "v"')
    again = journal_lib.Journal(path)
    self.assertEmpty(again.damaged)  # Torn, not damaged.
    again.add("c", {"v": 3})
    with open(path) as f:
      self.assertLen(f.read().splitlines(), 2)  # The torn bytes are gone.
    self.assertEmpty(journal_lib.Journal(path).damaged)

  def test_damaged_middle_records_are_named_and_moved_aside(self):
    path = os.path.join(self.create_tempdir().full_path, "journal.jsonl")
    j = journal_lib.Journal(path)
    for k in ("m|s0|clean", "m|s0|domain/uci", "m|s0|fog", "m|s0|last"):
      _cell(j, k)
    lines = open(path).read().splitlines(keepends=True)
    no_shape = json.loads(lines[1])
    del no_shape["arrays"]["shape"]  # Valid JSON, a field gone.
    lines[1] = json.dumps(no_shape) + "\n"
    lines[2] = lines[2][:40] + "\x00garbage" + lines[2][60:]  # Unparsable.
    with open(path, "w") as f:
      f.writelines(lines)
    with self.assertLogs(level="WARNING") as logs:
      again = journal_lib.Journal(path, check=journal_lib.check_cell)
    self.assertEqual(again.keys(), ["m|s0|clean", "m|s0|last"])
    self.assertEqual([(d.where, d.key) for d in again.damaged],
                     [("line 2", "m|s0|domain/uci"), ("line 3", "m|s0|fog")])
    self.assertIn("no 'shape' array", again.damaged[0].problem)
    self.assertIn("not valid JSON", again.damaged[1].problem)
    text = "\n".join(logs.output)
    self.assertIn("line 2 (cell m|s0|domain/uci)", text)
    self.assertIn("line 3 (cell m|s0|fog)", text)
    # Readers with the default check leave the same records out, and
    # write nothing.
    before = open(path).read()
    self.assertEqual(journal_lib.Journal(path).keys(), again.keys())
    self.assertEqual(open(path).read(), before)
    again.compact()
    moved = io.read_jsonl(journal_lib.damaged_path(path))
    self.assertEqual(journal_lib.damaged_path(path),
                     path.replace("journal.jsonl", "journal.damaged.jsonl"))
    self.assertEqual([(m["where"], m["cell"]) for m in moved],
                     [("line 2", "m|s0|domain/uci"), ("line 3", "m|s0|fog")])
    self.assertEqual(moved[0]["text"], lines[1].rstrip("\n"))
    self.assertEqual(moved[1]["text"], lines[2].rstrip("\n"))
    clean = journal_lib.Journal(path, check=journal_lib.check_cell)
    self.assertEqual((clean.keys(), clean.damaged), (again.keys(), []))

  def test_a_complete_last_line_that_does_not_parse_is_damaged(self):
    path = os.path.join(self.create_tempdir().full_path, "j.jsonl")
    journal_lib.Journal(path).add("a", {"v": 1})
    with open(path, "a") as f:
      f.write('{"key": "b", "v": ?}\n')  # Whole line: not a cut write.
    self.assertEqual([d.key for d in journal_lib.Journal(path).damaged],
                     ["b"])

  @parameterized.parameters(
      ({"key": "k"}, "seq"), ({"seq": 1}, "key"), ([1, 2], "not a JSON"),
      ({"key": "k", "seq": 1, "arrays": {"x": "!!"}}, "does not decode"))
  def test_check_record(self, record, problem):
    with self.assertRaisesRegex(ValueError, problem):
      journal_lib.check_record(record)

  def test_check_cell(self):
    path = os.path.join(self.create_tempdir().full_path, "j.jsonl")
    good = _cell(journal_lib.Journal(path), "k")
    journal_lib.check_cell(good)
    bad_rows = [dict(good, rows=[]), dict(good, rows=good["rows"] * 2),
                dict(good, rows=[dict(good["rows"][0], accuracy=1.5)]),
                dict(good, rows=[dict(good["rows"][0], n=11)]),
                {k: v for k, v in good.items() if k != "arrays"}]
    for record in bad_rows:
      with self.assertRaises(ValueError, msg=str(record)):
        journal_lib.check_cell(record)
    journal_lib.check_record(bad_rows[-1])  # Not a cell: fine generically.

  def test_damaged_bucket_records_are_moved_aside(self):
    root = self.create_tempdir().full_path
    with fake_bucket.fake_gcs(root):
      path = "gs://b/run/journal.jsonl"
      j = journal_lib.Journal(path)
      for k in ("a", "b", "c"):
        _cell(j, k)
      record = fake_bucket.local_path(
          f"gs://b/run/journal.records/{io.record_name('b')}.json", root)
      with open(record, "w") as f:
        f.write('{"key": "b", "rows": [')
      again = journal_lib.Journal(path)
      self.assertEqual(again.keys(), ["a", "c"])
      self.assertEqual([d.key for d in again.damaged], ["b"])
      again.compact()
      self.assertFalse(os.path.exists(record))
      self.assertEqual([m["cell"] for m in io.read_jsonl(
          "gs://b/run/journal.damaged.jsonl")], ["b"])
      self.assertEmpty(journal_lib.Journal(path).damaged)


if __name__ == "__main__":
  absltest.main()
