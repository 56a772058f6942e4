"""File helpers for local folders and buckets: atomic writes, JSON, records.

Every path goes through `etils.epath` (the path library Orbax and tfds use),
so a workdir may be a local folder or an object-store URL such as
`gs://bucket/runs/study` (reading and writing `gs://` needs `gcsfs`; see
BUILD.md, "TPU VM"). Local paths are made absolute; URLs are kept as given.

Atomicity. Readers must never see half a file, and a run killed at any
instant must leave either the old or the new content:

* local files are written to a temporary file in the same folder, fsynced and
  renamed over the target (POSIX rename is atomic);
* an object store has no rename and no append, but an object appears whole
  when its upload completes (one PUT), so objects are written in one go.

Two ways to keep a growing log, both safe on both kinds of storage:

* `append_jsonl` / `read_jsonl`: one JSON-lines file. Locally each call is
  one write + fsync (a crash leaves at worst a torn last line, which
  `read_jsonl` skips). On an object store each call rewrites the whole object
  (atomic, but costs the file's size per call): fine for small logs.
* `write_record` / `read_records`: one small object per record in a folder,
  each written atomically; `read_records` merges them and skips any torn or
  foreign file. Use this for logs that grow with the run (a study's results,
  its progress journal), since it costs one object per record on any storage.

Writing from process 0 only, in multi-host runs, stays the caller's job.
"""

import concurrent.futures
import errno
import hashlib
import json
import os
import re
import tempfile
from typing import Any, Dict, Iterable, List, Optional, Union

from etils import epath

PathLike = Union[str, os.PathLike]
RECORD_SUFFIX = ".json"
_RECORD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]{0,199}$")
_READ_THREADS = 16
# OS errors that say the storage cannot take the run's files (as opposed to,
# say, a missing input): a run ends on them with one sentence.
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
                  errno.EPERM, errno.EIO, errno.EFBIG)
_ENOSPC_TEXT = re.compile(r"No space left on device|\[Errno 28\]|ENOSPC")


class StorageError(RuntimeError):
  """The storage refused a run's files; the message is one sentence.

  Attributes:
    path: the file or folder the OS error named ('' if none).
  """

  def __init__(self, message: str, path: str = ""):
    super().__init__(message)
    self.path = path


def storage_os_error(error: BaseException) -> Optional[OSError]:
  """The storage `OSError` behind `error` (itself or a cause), else None.

  Libraries that write through their own I/O (TensorStore under Orbax)
  report a full disk in their own exception types; their text still says
  "No space left on device", which is mapped to an `OSError(ENOSPC)`.

  Args:
    error: any exception.

  Returns:
    An OSError whose errno is in `STORAGE_ERRNOS`, or None.
  """
  seen = set()
  e = error
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in STORAGE_ERRNOS:
      return e
    e = e.__cause__ or e.__context__
  if _ENOSPC_TEXT.search(str(error)):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  return None


def describe_storage_error(error: OSError, saved: str) -> str:
  """One sentence: what failed, where, what is safe and what to do.

  Args:
    error: an OSError (ideally with `filename`).
    saved: what is safe so far, e.g. "57 cells are saved in DIR/journal.jsonl".

  Returns:
    The sentence.
  """
  path = error.filename or "the workdir"
  reason = error.strerror or str(error)
  code = errno.errorcode.get(error.errno, "")
  fix = {errno.ENOSPC: "free disk space", errno.EDQUOT: "raise the quota or "
         "free space", errno.EROFS: "make the workdir writable",
         errno.EACCES: "make the workdir writable",
         errno.EPERM: "make the workdir writable",
         errno.EFBIG: "free space or raise the file-size limit"}.get(
             error.errno, "fix the storage")
  return (f"{reason}{f' ({code})' if code else ''} writing {path}: {saved}; "
          f"{fix} and rerun the same command to resume from there.")


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def is_local(path: PathLike) -> bool:
  """True for a path on the local file system, False for a URL (`gs://...`)."""
  return "://" not in os.fspath(path)


def as_path(path: PathLike) -> epath.Path:
  """`path` as an `epath.Path`: local paths absolute, URLs unchanged.

  (`os.path.abspath` would turn `gs://b/x` into `/cwd/gs:/b/x`.)
  """
  if is_local(path):
    return epath.Path(os.path.abspath(os.fspath(path)))
  return epath.Path(path)


def exists(path: PathLike) -> bool:
  return as_path(path).exists()


def makedirs(path: PathLike) -> epath.Path:
  """Creates folder `path` and its parents if missing; returns it.

  On an object store folders are implicit; this is then a cheap no-op.
  """
  p = as_path(path)
  p.mkdir(parents=True, exist_ok=True)
  return p


def read_text(path: PathLike) -> str:
  return as_path(path).read_text()


def read_json(path: PathLike) -> Any:
  return json.loads(read_text(path))


def write_atomic(path: PathLike, data: Union[str, bytes]) -> None:
  """Writes `data` (text or bytes) so readers see the old or the new file.

  Local: temporary file in the same folder, fsync, rename over `path`.
  Object store: one upload (the object appears only when it is complete).

  Args:
    path: local path or URL of the file.
    data: the whole new content.
  """
  p = as_path(path)
  raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
  if not is_local(p):
    makedirs(p.parent)
    with p.open("wb") as f:
      f.write(raw)
    return
  folder = os.fspath(p.parent)
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
  try:
    os.fchmod(fd, 0o666 & ~_umask())  # As open() would (mkstemp: 0600).
    with os.fdopen(fd, "wb") as f:
      f.write(raw)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, os.fspath(p))
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json(path: PathLike, obj: Any) -> None:
  write_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


def _jsonl(rows: Iterable[dict]) -> str:
  return "".join(json.dumps(r, sort_keys=True, default=str) + "\n"
                 for r in rows)


def append_jsonl(path: PathLike, rows: Iterable[dict]) -> None:
  """Appends rows as JSON lines; each call lands whole or not at all.

  Local: one write + fsync per call; a crash can at worst leave one partial
  last line, which `read_jsonl` skips (and the next call starts a fresh
  line). Object store: the object is rewritten with the new rows (one
  upload), so the cost per call grows with the file; use `write_record` for
  logs that grow with the run.

  Args:
    path: local path or URL of the JSON-lines file.
    rows: JSON-serialisable dicts.
  """
  text = _jsonl(rows)
  if not text:
    return
  p = as_path(path)
  if not is_local(p):
    old = p.read_text() if p.exists() else ""
    if old and not old.endswith("\n"):
      old += "\n"
    write_atomic(p, old + text)
    return
  os.makedirs(os.fspath(p.parent), exist_ok=True)
  with open(os.fspath(p), "a+") as f:
    f.seek(0, os.SEEK_END)
    if f.tell():
      f.seek(f.tell() - 1)
      if f.read(1) != "\n":
        f.write("\n")
    f.write(text)
    f.flush()
    os.fsync(f.fileno())


def read_jsonl(path: PathLike) -> List[dict]:
  """Reads JSON lines (local or URL); a torn (unparsable) line is skipped."""
  p = as_path(path)
  if not p.exists():
    return []
  rows = []
  for line in p.read_text().splitlines():
    line = line.strip()
    if not line:
      continue
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  return rows


def record_name(key: str) -> str:
  """A deterministic, file-safe record name for any string key.

  Readable characters of `key` are kept (others become `_`) and a short hash
  of the full key is appended, so distinct keys never share a name:
  `record_name("r20/corruption/fog")` -> `r20_corruption_fog-5f0c1e2a9b`.

  Args:
    key: any string (e.g. a cell key with `/`).

  Returns:
    A name accepted by `write_record`.
  """
  slug = re.sub(r"[^A-Za-z0-9._=+-]+", "_", key).strip("._-")[:120]
  digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:10]
  return f"{slug}-{digest}" if slug else digest


def write_record(directory: PathLike, name: str, obj: Any) -> str:
  """Writes one record (`directory/name.json`) atomically; returns its path.

  A record with the same name is replaced whole. Records are independent
  objects, so this is safe on object stores, where files cannot be appended
  to, and costs the same whatever the number of records already written.

  Args:
    directory: local folder or URL; created if missing.
    name: file-safe name: letters, digits and `._=+-`, first character a
      letter or digit, at most 200 characters (`record_name(key)` makes one
      from any string).
    obj: a JSON-serialisable value.

  Returns:
    The record's path.

  Raises:
    ValueError: for a name that is not file-safe.
  """
  if not isinstance(name, str) or not _RECORD_NAME.match(name):
    raise ValueError(
        f"Record name {name!r} is not file-safe: use letters, digits and "
        "'._=+-' (first a letter or digit, at most 200 characters), e.g. "
        "robustjax.io.record_name(key).")
  path = as_path(directory) / (name + RECORD_SUFFIX)
  write_atomic(path, json.dumps(obj, sort_keys=True, default=str))
  return os.fspath(path)


_TORN = object()


def _read_record(path: epath.Path, keep_text: bool = False):
  try:
    text = path.read_text()
  except (UnicodeDecodeError, FileNotFoundError):
    return _TORN
  try:
    return json.loads(text)
  except json.JSONDecodeError:
    return (_TORN, text) if keep_text else _TORN


def read_records(directory: PathLike,
                 unreadable: Optional[Dict[str, str]] = None
                 ) -> Dict[str, Any]:
  """All records written by `write_record` in `directory`, by name.

  Torn or unparsable records, temporary files and files without the
  `.json` suffix are skipped; a missing folder has no records. Object-store
  records are fetched in parallel.

  Args:
    directory: local folder or URL.
    unreadable: if given, receives {name: text} of the records that were
      skipped because their text is not JSON.

  Returns:
    {name: value}, sorted by name.
  """
  d = as_path(directory)
  if not d.exists():
    return {}
  paths = sorted(p for p in d.iterdir()
                 if p.name.endswith(RECORD_SUFFIX)
                 and _RECORD_NAME.match(p.name[:-len(RECORD_SUFFIX)]))
  read = lambda p: _read_record(p, keep_text=unreadable is not None)
  if is_local(d) or len(paths) < 2:
    values = [read(p) for p in paths]
  else:
    with concurrent.futures.ThreadPoolExecutor(_READ_THREADS) as pool:
      values = list(pool.map(read, paths))
  out = {}
  for p, v in zip(paths, values):
    name = p.name[:-len(RECORD_SUFFIX)]
    if isinstance(v, tuple) and v and v[0] is _TORN:
      unreadable[name] = v[1]
    elif v is not _TORN:
      out[name] = v
  return out
