"""Small file helpers: atomic writes, JSON lines."""

import json
import os
import tempfile
from typing import Any, Iterable, List

import numpy as np


def write_atomic(path: str, text: str) -> None:
  """Writes `text` to `path` so readers see the old or the new file, never a
  torn one (temp file in the same folder + fsync + rename)."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json(path: str, obj: Any) -> None:
  write_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


def append_jsonl(path: str, rows: Iterable[dict]) -> None:
  """Appends rows as JSON lines, one write + fsync per call.

  A crash can at worst leave one partial last line, which `read_jsonl`
  ignores (and the next append starts on a fresh line).
  """
  text = "".join(json.dumps(r, sort_keys=True, default=str) + "\n"
                 for r in rows)
  if not text:
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "a+") as f:
    f.seek(0, os.SEEK_END)
    if f.tell():
      f.seek(f.tell() - 1)
      if f.read(1) != "\n":
        f.write("\n")
    f.write(text)
    f.flush()
    os.fsync(f.fileno())


def read_jsonl(path: str) -> List[dict]:
  """Reads JSON lines; a torn (unparsable) line is skipped."""
  if not os.path.exists(path):
    return []
  rows = []
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return rows


def write_npz_atomic(path: str, arrays: dict) -> None:
  """Saves numpy arrays as a compressed .npz, atomically (temp + rename)."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npz")
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez_compressed(f, **arrays)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
