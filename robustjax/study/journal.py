"""The one resumable progress record of every launcher (study, compress,
evaluate, sweep).

A journal is a JSON-lines file of *records*, one line per finished unit of
work (a result cell, a sweep point):

  {"key": "resnet8-w16/original|s0|corruption/fog", "rows": [...], ...}

* Appending a record is one write + fsync of one line, so a record is
  either complete or a torn last line, which reading drops (and the next
  append starts on a fresh line). Re-adding a key replaces it (last wins).
* Arrays that belong to a record (per-example correctness, bit-packed: a
  few hundred bytes) travel inside its line (`.npy` bytes, base64), so a
  record and its arrays are written in the same single write.
* Only process 0 writes (`parallel.is_main_process()`); every process reads.
* On an object store (`gs://...`: no append), each record is its own object
  in `<stem>.records/` (robustjax.io.write_record), merged on read in the
  order they were added; locally it is one JSON-lines file.

A launcher killed at any point and restarted re-reads the journal, skips the
keys it holds and redoes at most the unit that was being written.
"""

import base64
import io as stdio
import json
import os
from typing import Any, Dict, Iterator, List, Optional

import numpy as np

from robustjax import io
from robustjax import parallel


def exists(path: str) -> bool:
  """True if a journal was written at `path` (its file, or in a bucket its
  `<stem>.records/` folder)."""
  if io.is_local(path):
    return io.exists(path)
  return io.exists(os.path.splitext(os.fspath(path))[0] + ".records")


def _encode(array) -> str:
  buf = stdio.BytesIO()
  np.save(buf, np.asarray(array), allow_pickle=False)
  return base64.b64encode(buf.getvalue()).decode("ascii")


def _decode(text: str) -> np.ndarray:
  return np.load(stdio.BytesIO(base64.b64decode(text)), allow_pickle=False)


class Journal:
  """Finished units of work, keyed, with optional per-record arrays."""

  def __init__(self, path: str):
    self.path = path
    stem = os.path.splitext(os.fspath(path))[0]
    self.local = io.is_local(path)
    self.record_dir = stem + ".records"
    if self.local:
      found = io.read_jsonl(path)
    else:
      found = sorted(io.read_records(self.record_dir).values(),
                     key=lambda r: r.get("seq", 0) if isinstance(r, dict)
                     else 0)
    self._records: Dict[str, dict] = {}
    for record in found:
      if isinstance(record, dict) and "key" in record:
        self._records.pop(record["key"], None)  # Re-added: moves to the end.
        self._records[record["key"]] = record
    self._seq = max([r.get("seq", 0) for r in self._records.values()] + [0])

  def __contains__(self, key: str) -> bool:
    return key in self._records

  def __len__(self) -> int:
    return len(self._records)

  def __iter__(self) -> Iterator[dict]:
    return iter(list(self._records.values()))

  def get(self, key: str) -> Optional[dict]:
    return self._records.get(key)

  def keys(self) -> List[str]:
    return list(self._records)

  def add(self, key: str, record: Dict[str, Any],
          arrays: Optional[Dict[str, np.ndarray]] = None) -> dict:
    """Records a finished unit (arrays first, then the line)."""
    self._seq += 1
    record = {**record, "key": key, "seq": self._seq}
    if arrays:
      record["arrays"] = {name: _encode(a) for name, a in arrays.items()}
    if parallel.is_main_process():
      if self.local:
        io.append_jsonl(self.path, [record])
      else:
        io.write_record(self.record_dir, io.record_name(key), record)
    self._records.pop(key, None)
    self._records[key] = record
    return record

  def arrays(self, key: str) -> Dict[str, np.ndarray]:
    """The arrays stored with `key`'s record ({} when it has none)."""
    record = self._records.get(key) or {}
    return {name: _decode(text)
            for name, text in (record.get("arrays") or {}).items()}

  def compact(self) -> None:
    """Rewrites the file without torn lines or replaced records."""
    if (parallel.is_main_process() and self.local and
        os.path.exists(self.path)):
      io.write_atomic(self.path, "".join(
          json.dumps(r, sort_keys=True, default=str) + "\n"
          for r in self._records.values()))


# The study's record format: {"rows": [...]} + arrays {"correct", "shape"}.


def rows_of(journal: "Journal") -> List[dict]:
  """All result rows of a journal, in record order."""
  return [r for record in journal for r in record.get("rows", ())]


def examples_of(journal: "Journal"
                ) -> Dict[tuple, np.ndarray]:
  """(model_id, seed, shift, name) -> bool [levels, n] per-example correct."""
  out = {}
  for record in journal:
    rows = record.get("rows") or []
    arrays = journal.arrays(record["key"])
    if not rows or "correct" not in arrays:
      continue
    r = rows[0]
    levels, n = (int(x) for x in arrays["shape"])
    bits = np.unpackbits(arrays["correct"], axis=-1, count=n)
    out[(r["model_id"], r["seed"], r["shift"], r["name"])] = (
        bits.reshape(levels, n).astype(bool))
  return out
