"""robustjax.io on a local folder and on a `gs://` bucket (test double).

Every test runs twice: on a local temporary folder and on
`gs://bucket/...` served by tests/fake_bucket.py, which goes through etils'
fsspec backend as a real bucket does and, like an object store, refuses to
append to or update an object.
"""

import contextlib
import errno
import json
import os
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized

from robustjax import io
from tests import fake_bucket

BACKENDS = (("local",), ("bucket",))


class IoTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.root = self.create_tempdir().full_path

  @contextlib.contextmanager
  def folder(self, backend):
    """Yields (path to use, local folder that holds its bytes)."""
    if backend == "local":
      yield os.path.join(self.root, "run"), os.path.join(self.root, "run")
    else:
      with fake_bucket.fake_gcs(os.path.join(self.root, "buckets")) as root:
        yield "gs://bkt/run", os.path.join(root, "bkt", "run")

  @parameterized.parameters(*BACKENDS)
  def test_write_and_read(self, backend):
    with self.folder(backend) as (d, local):
      io.write_json(d + "/sub/config.json", {"a": 1, "b": [2, 3]})
      self.assertEqual(io.read_json(d + "/sub/config.json"),
                       {"a": 1, "b": [2, 3]})
      io.write_atomic(d + "/plot.png", b"\x89PNG\x00\xff")
      self.assertEqual(io.as_path(d + "/plot.png").read_bytes(),
                       b"\x89PNG\x00\xff")
      io.write_atomic(d + "/report.md", "v1")
      io.write_atomic(d + "/report.md", "v2")
      self.assertEqual(io.read_text(d + "/report.md"), "v2")
      self.assertTrue(io.exists(d + "/report.md"))
      self.assertFalse(io.exists(d + "/nothing"))
      self.assertEqual(str(io.makedirs(d + "/sub/deeper")),
                       str(io.as_path(d)) + "/sub/deeper")
    self.assertEqual(sorted(os.listdir(local)),
                     ["plot.png", "report.md", "sub"])  # No temporary files.
    self.assertFalse(os.path.exists("gs:"))  # No mangled local folder.

  def test_as_path(self):
    self.assertEqual(str(io.as_path("gs://b/x/y")), "gs://b/x/y")
    self.assertFalse(io.is_local("gs://b/x"))
    self.assertTrue(io.is_local("runs/x"))
    self.assertEqual(str(io.as_path("runs/x")), os.path.abspath("runs/x"))

  def test_failed_local_write_keeps_the_old_file(self):
    path = os.path.join(self.root, "results.json")
    io.write_atomic(path, "old")

    class Boom(Exception):
      pass

    def fail(*args):
      raise Boom()

    with mock.patch.object(os, "replace", fail):
      with self.assertRaises(Boom):
        io.write_atomic(path, "new")
    self.assertEqual(open(path).read(), "old")
    self.assertEqual(os.listdir(self.root), ["results.json"])

  @parameterized.parameters(*BACKENDS)
  def test_jsonl(self, backend):
    with self.folder(backend) as (d, local):
      path = d + "/metrics.jsonl"
      self.assertEqual(io.read_jsonl(path), [])
      io.append_jsonl(path, [{"step": 1}])
      io.append_jsonl(path, [])  # No-op.
      io.append_jsonl(path, [{"step": 2}, {"step": 3}])
      # A torn last line, as a crash mid-write leaves it locally.
      with open(os.path.join(local, "metrics.jsonl"), "a") as f:
        f.write('{"step": 4, "lo')
      self.assertEqual([r["step"] for r in io.read_jsonl(path)], [1, 2, 3])
      io.append_jsonl(path, [{"step": 5}])
      self.assertEqual([r["step"] for r in io.read_jsonl(path)],
                       [1, 2, 3, 5])

  def test_bucket_refuses_appends(self):
    # The double behaves like an object store, so the test above proves
    # append_jsonl never appends to an object.
    with self.folder("bucket") as (d, _):
      io.write_atomic(d + "/x.txt", "a")
      with self.assertRaisesRegex(NotImplementedError, "cannot append"):
        with io.as_path(d + "/x.txt").open("a") as f:
          f.write("b")

  @parameterized.parameters(*BACKENDS)
  def test_records(self, backend):
    with self.folder(backend) as (d, local):
      records = d + "/journal"
      self.assertEqual(io.read_records(records), {})
      for i in range(5):
        path = io.write_record(records, f"cell-{i}", {"i": i, "acc": i / 10})
        self.assertTrue(path.endswith(f"/journal/cell-{i}.json"), path)
      io.write_record(records, "cell-2", {"i": 2, "acc": 0.9})  # Replaced.
      # Torn, foreign and temporary files are skipped.
      with open(os.path.join(local, "journal", "cell-5.json"), "w") as f:
        f.write('{"i": 5, "ac')
      for name in ("notes.txt", ".tmp-abc.json", "README"):
        with open(os.path.join(local, "journal", name), "w") as f:
          f.write("{}")
      got = io.read_records(records)
      self.assertEqual(list(got), [f"cell-{i}" for i in range(5)])
      self.assertEqual(got["cell-2"], {"i": 2, "acc": 0.9})
      self.assertEqual(got["cell-4"], {"i": 4, "acc": 0.4})

  @parameterized.parameters(*BACKENDS)
  def test_many_records(self, backend):
    with self.folder(backend) as (d, _):
      keys = [f"model_{m}/corruption/fog/{s}" for m in range(8)
              for s in range(1, 6)]
      for k in keys:
        io.write_record(d, io.record_name(k), {"key": k})
      got = io.read_records(d)
      self.assertLen(got, len(keys))
      self.assertCountEqual([v["key"] for v in got.values()], keys)

  @parameterized.parameters(*BACKENDS)
  def test_unparsable_records_are_reported(self, backend):
    with self.folder(backend) as (d, local):
      io.write_record(d, "a", {"i": 1})
      os.makedirs(local, exist_ok=True)
      with open(os.path.join(local, "b.json"), "w") as f:
        f.write('{"i": 2, ')
      unreadable = {}
      self.assertEqual(io.read_records(d, unreadable=unreadable),
                       {"a": {"i": 1}})
      self.assertEqual(unreadable, {"b": '{"i": 2, '})

  def test_storage_errors(self):
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/w/journal.jsonl")
    self.assertIs(io.storage_os_error(full), full)
    try:  # A library's own error type, raised from the OSError.
      try:
        raise full
      except OSError as e:
        raise RuntimeError("save failed") from e
    except RuntimeError as e:
      self.assertIs(io.storage_os_error(e), full)
    # TensorStore under Orbax says it in its message only.
    found = io.storage_os_error(ValueError(
        "DATA_LOSS: Error writing local file \"/w/m/d/x\": [OS error 28: No "
        "space left on device]"))
    self.assertEqual(found.errno, errno.ENOSPC)
    self.assertIsNone(io.storage_os_error(FileNotFoundError(
        errno.ENOENT, "No such file", "/data/x")))  # Not a storage fault.
    self.assertIsNone(io.storage_os_error(ValueError("bad value")))
    self.assertEqual(
        io.describe_storage_error(full, "3 cells are saved in /w/j"),
        "No space left on device (ENOSPC) writing /w/journal.jsonl: 3 cells "
        "are saved in /w/j; free disk space and rerun the same command to "
        "resume from there.")
    read_only = OSError(errno.EROFS, os.strerror(errno.EROFS), "/w/x")
    self.assertIn("(EROFS) writing /w/x: ok; make the workdir writable",
                  io.describe_storage_error(read_only, "ok"))

  def test_record_names(self):
    names = {io.record_name(k) for k in ("a/b", "a_b", "a b", "a/b/", "")}
    self.assertLen(names, 5)  # Distinct keys, distinct names.
    for n in names:
      self.assertRegex(n, r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")
    self.assertEqual(io.record_name("r20/fog"), io.record_name("r20/fog"))
    self.assertTrue(io.record_name("r20/corruption/fog").startswith(
        "r20_corruption_fog-"))
    for bad in ("a/b", "../x", ".hidden", "", "x" * 201, "a b"):
      with self.assertRaisesRegex(ValueError, "not file-safe"):
        io.write_record(self.root, bad, {})
    self.assertEqual(os.listdir(self.root), [])

  def test_record_values_are_json(self):
    path = io.write_record(self.root, "r", {"x": float("nan"), "t": (1, 2)})
    with open(path) as f:
      self.assertEqual(json.loads(f.read())["t"], [1, 2])


if __name__ == "__main__":
  absltest.main()
