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

Records are validated on read (`check_record`, plus a `check` of the
caller's: the study's runner asks for `check_cell` and its row schema). A
torn last line (a write cut short: no final newline) is dropped, and the
next `add` cuts it off. Any other record that does not parse or does not
validate (a storage fault) is *damaged*: it is left out with a warning
naming its line (or record object) and its cell, so its cell counts as not
done and is recomputed, and `compact()` moves it to `<stem>.damaged.jsonl`
(with its line number, cell, problem and text) before rewriting the
journal: compaction never deletes what it cannot parse.
"""

import base64
import io as stdio
import json
import os
import re
import time
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional

from absl import logging
import numpy as np

from robustjax import io
from robustjax import parallel


DAMAGED_SUFFIX = ".damaged.jsonl"  # journal.jsonl -> journal.damaged.jsonl
_KEY_IN_TEXT = re.compile(r'"key"\s*:\s*"((?:[^"\\]|\\.){1,300})"')


def exists(path: str) -> bool:
  """True if a journal was written at `path` (its file, or in a bucket its
  `<stem>.records/` folder)."""
  if io.is_local(path):
    return io.exists(path)
  return io.exists(os.path.splitext(os.fspath(path))[0] + ".records")


def damaged_path(path: str) -> str:
  """Where `compact()` moves the damaged records of journal `path`."""
  return os.path.splitext(os.fspath(path))[0] + DAMAGED_SUFFIX


def _encode(array) -> str:
  buf = stdio.BytesIO()
  np.save(buf, np.asarray(array), allow_pickle=False)
  return base64.b64encode(buf.getvalue()).decode("ascii")


def _decode(text: str) -> np.ndarray:
  return np.load(stdio.BytesIO(base64.b64decode(text)), allow_pickle=False)


class Damaged(NamedTuple):
  """A record left out on read: where it was, its cell and what is wrong."""
  where: str  # "line 57" (local file) or "record <name>" (bucket object).
  key: Optional[str]  # Its cell's key, when it can be read.
  problem: str
  text: str  # The record as stored.


def _is_int(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_record(record: Any) -> None:
  """Raises ValueError saying what is wrong with a journal record.

  Every record: an object with a string "key" and an integer "seq"; its
  "arrays", if any, an object of arrays that decode. A record whose arrays
  hold "correct" is a result cell and must be a well-formed one
  (`check_cell`).

  Args:
    record: a parsed journal line.
  """
  if not isinstance(record, dict):
    raise ValueError(f"not a JSON object but {type(record).__name__}")
  if not isinstance(record.get("key"), str) or not record["key"]:
    raise ValueError("no 'key' string")
  if not _is_int(record.get("seq")):
    raise ValueError("no integer 'seq'")
  arrays = record.get("arrays")
  if arrays is None:
    return
  if not isinstance(arrays, dict):
    raise ValueError("'arrays' is not an object")
  for name, text in arrays.items():
    try:
      _decode(text)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f"array {name!r} does not decode ({type(e).__name__})"
                       ) from None
  if "correct" in arrays:
    _check_cell_fields(record)


def check_cell(record: Any) -> None:
  """`check_record` for a result cell (the study's and evaluate's records).

  A cell record holds "rows" (a non-empty list of result rows, each with
  shift, name, level, accuracy in [0, 1] and a positive n) and "arrays"
  with "correct" (bit-packed, [levels, ceil(n / 8)] uint8) and "shape"
  ([levels, n]), one level per row.

  Args:
    record: a parsed journal line.

  Raises:
    ValueError: naming the first problem found.
  """
  check_record(record)
  if not isinstance(record.get("arrays"), dict) or (
      "correct" not in record["arrays"]):
    raise ValueError("no 'correct' array")


def _check_cell_fields(record: dict) -> None:
  """The rules of a result cell (`check_cell`), arrays known to decode."""
  rows = record.get("rows")
  if not isinstance(rows, list) or not rows:
    raise ValueError("'rows' is not a non-empty list")
  for row in rows:
    if not isinstance(row, dict):
      raise ValueError("a row is not an object")
    missing = [k for k in ("shift", "name", "level", "accuracy", "n")
               if k not in row]
    if missing:
      raise ValueError(f"a row misses {missing}")
    if not _is_number(row["accuracy"]) or not 0 <= row["accuracy"] <= 1:
      raise ValueError(f"a row's accuracy is {row['accuracy']!r}")
    if not _is_int(row["n"]) or row["n"] <= 0:
      raise ValueError(f"a row's n is {row['n']!r}")
  arrays = record["arrays"]
  if "shape" not in arrays:
    raise ValueError("no 'shape' array")
  shape = _decode(arrays["shape"])
  if shape.shape != (2,) or shape.dtype.kind not in "iu" or (shape < 0).any():
    raise ValueError(f"'shape' is {shape.tolist()!r}, not [levels, n]")
  levels, n = (int(x) for x in shape)
  correct = _decode(arrays["correct"])
  if correct.dtype != np.uint8 or correct.shape != (levels, (n + 7) // 8):
    raise ValueError(f"'correct' is {correct.dtype} {correct.shape}, not "
                     f"uint8 {(levels, (n + 7) // 8)} for shape {[levels, n]}")
  if len(rows) != levels:
    raise ValueError(f"{len(rows)} rows for {levels} levels")
  if any(row["n"] != n for row in rows):
    raise ValueError(f"a row's n differs from the arrays' {n}")


def _key_in(text: str) -> Optional[str]:
  """The cell key a damaged record's text still shows, if any."""
  match = _KEY_IN_TEXT.search(text)
  if not match:
    return None
  try:
    return json.loads(f'"{match.group(1)}"')
  except json.JSONDecodeError:
    return match.group(1)


class Journal:
  """Finished units of work, keyed, with optional per-record arrays.

  Attributes:
    path: the journal's path (local file, or in a bucket the name whose
      `<stem>.records/` folder holds the records).
    damaged: the records left out on read (`Damaged`), in file order.
  """

  def __init__(self, path: str,
               check: Optional[Callable[[Any], None]] = None):
    """Reads the journal at `path` (missing: empty).

    Args:
      path: the journal's path.
      check: besides `check_record`, raises ValueError for a record to
        leave out as damaged (e.g. `check_cell`).
    """
    self.path = path
    stem = os.path.splitext(os.fspath(path))[0]
    self.local = io.is_local(path)
    self.record_dir = stem + ".records"
    self.damaged: List[Damaged] = []
    self._torn_at: Optional[int] = None  # Offset of a torn last line.
    self._names: Dict[str, str] = {}  # Bucket: key -> record object name.
    found = self._read_local() if self.local else self._read_bucket()
    self._records: Dict[str, dict] = {}
    for where, text, record in found:
      try:
        check_record(record)
        if check is not None:
          check(record)
      except ValueError as e:
        self._damage(where, text, str(e), record)
        continue
      self._records.pop(record["key"], None)  # Re-added: moves to the end.
      self._records[record["key"]] = record
    self._seq = max([r["seq"] for r in self._records.values()] + [0])
    self.damaged.sort(key=lambda d: (len(d.where), d.where))  # File order.
    for d in self.damaged:
      logging.warning(
          "Journal %s, %s (cell %s) is damaged (%s): left out, so that cell "
          "counts as not done; the next run that writes this workdir moves "
          "it to %s and recomputes the cell.", self.path, d.where,
          d.key or "unknown", d.problem, damaged_path(self.path))

  def _damage(self, where, text, problem, record=None):
    key = record.get("key") if isinstance(record, dict) else None
    self.damaged.append(Damaged(where, key if isinstance(key, str) else
                                _key_in(text), problem, text))

  def _read_local(self) -> List[tuple]:
    """(where, text, record) per parsed line; damaged lines noted."""
    p = io.as_path(self.path)
    if not p.exists():
      return []
    data = p.read_bytes()
    lines = data.split(b"\n")
    found, offset = [], 0
    for number, raw in enumerate(lines, start=1):
      start, offset = offset, offset + len(raw) + 1
      if not raw.strip():
        continue
      last = number == len(lines)  # No newline after it: cut short.
      try:
        text = raw.decode("utf-8")
        record = json.loads(text)
      except (UnicodeDecodeError, json.JSONDecodeError) as e:
        if last:
          self._torn_at = start
          logging.info("Journal %s: dropped its torn last line (a write cut "
                       "short).", self.path)
        else:
          self._damage(f"line {number}", raw.decode("utf-8", "replace"),
                       "not valid JSON" if isinstance(
                           e, json.JSONDecodeError) else "not UTF-8 text")
        continue
      found.append((f"line {number}", text, record))
    return found

  def _read_bucket(self) -> List[tuple]:
    unreadable = {}
    records = io.read_records(self.record_dir, unreadable=unreadable)
    for name, text in unreadable.items():
      self._damage(f"record {name}", text, "not valid JSON")
    found = sorted(records.items(), key=lambda kv: kv[1].get("seq", 0)
                   if isinstance(kv[1], dict) and _is_int(kv[1].get("seq"))
                   else 0)
    for name, record in found:
      if isinstance(record, dict) and isinstance(record.get("key"), str):
        self._names[record["key"]] = name
    return [(f"record {name}", json.dumps(record, sort_keys=True), record)
            for name, record in found]

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
        if self._torn_at is not None:  # Cut off the torn last line first.
          os.truncate(os.fspath(io.as_path(self.path)), self._torn_at)
          self._torn_at = None
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
    """Moves damaged records aside, then drops torn and replaced ones.

    The damaged records go to `damaged_path(path)` first (appended, one
    JSON line each: source, line or record, cell, problem, text), with a
    warning naming them; only then is the journal rewritten (locally) or
    are their objects removed (bucket). A writer calls this at start-up,
    holding the workdir's lock (robustjax.lock).
    """
    if not parallel.is_main_process():
      return
    if self.damaged:
      target = damaged_path(self.path)
      io.append_jsonl(target, [
          {"source": os.path.basename(os.fspath(self.path)),
           "where": d.where, "cell": d.key, "problem": d.problem,
           "text": d.text, "moved": time.strftime("%Y-%m-%d %H:%M:%S")}
          for d in self.damaged])
      logging.warning(
          "Moved %d damaged record(s) of %s (%s) to %s; their cells are "
          "recomputed.", len(self.damaged), self.path, "; ".join(
              f"{d.where}: cell {d.key or 'unknown'}" for d in self.damaged),
          target)
      if not self.local:
        for d in self.damaged:
          name = d.where.split(" ", 1)[1]
          (io.as_path(self.record_dir) / (name + io.RECORD_SUFFIX)).unlink(
              missing_ok=True)
      self.damaged = []
    if self.local and os.path.exists(self.path):
      io.write_atomic(self.path, "".join(
          json.dumps(r, sort_keys=True, default=str) + "\n"
          for r in self._records.values()))
      self._torn_at = None


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
