"""One writer per workdir: `with lock.hold(workdir, "study"): ...`.

Every library function that writes a run's folder (the study runner, the
trainer, the sweep runner, `evaluate_saved`) holds its workdir's lock while
it works, so two runs on one workdir (a second terminal, a re-submitted job,
a notebook beside a launcher) cannot interleave their journals or collide in
their model saves: the second one stops at once with `WorkdirLockedError`,
one sentence naming the holder (host, PID, since when) and what to do.
Reading a workdir (reports, notebooks) takes no lock.

* Local folders: an exclusive `fcntl.flock` on `WORKDIR/.lock`, which holds
  the holder's host, PID, start time, kind of run and command line as
  JSON. The kernel drops the lock when the process ends, however it ends
  (kill -9 included), so there is never a stale local lock; the file itself
  stays.
* Object stores (`gs://...`), which have no locks: a lease object
  `WORKDIR/.lease.json` (host, PID, start time, a heartbeat refreshed every
  `LEASE_REFRESH_S` seconds by a background thread). A lease whose heartbeat
  is older than `LEASE_STALE_S` is stale (its holder died) and is taken
  over, with a warning. Limitation: robustjax.io has no atomic
  create-if-absent, so the lease is written, then read back after
  `LEASE_SETTLE_S`; two runs started within that window on one bucket
  workdir are not both refused with certainty, and the staleness rule
  compares clocks of different hosts. Start one run per bucket workdir.
* A process holding a folder's lock writes its subfolders freely (the
  study trains each model in `WORKDIR/models/<id>/train` with the
  trainer, which asks for that folder's lock): nested `hold` calls on the
  same folder or below it take nothing.
* Multi-host: process 0 takes the lock; the others rely on it.
* A local file system without `flock` support (some FUSE mounts) logs a
  warning and runs unlocked.
"""

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
import uuid
from typing import Dict, Iterator, Optional

from absl import logging

from robustjax import io
from robustjax import parallel

LOCK_FILE = ".lock"
LEASE_FILE = ".lease.json"
LEASE_REFRESH_S = 60.0  # Heartbeat period of a bucket lease.
LEASE_STALE_S = 600.0  # A bucket lease not refreshed for this long is stale.
LEASE_SETTLE_S = 1.0  # Wait before reading a new bucket lease back.

_HELD: Dict[str, "Lock"] = {}  # Folder -> its lock, held by this process.
_HELD_GUARD = threading.Lock()


class WorkdirLockedError(RuntimeError):
  """Another process holds the workdir; the message says who and what to do.

  Attributes:
    holder: the holder's record ({host, pid, since, command}; may be {}).
  """

  def __init__(self, message: str, holder: dict):
    super().__init__(message)
    self.holder = holder


def _me(what: str) -> dict:
  return {"host": socket.gethostname(), "pid": os.getpid(),
          "since": time.strftime("%Y-%m-%d %H:%M:%S"), "what": what,
          "command": " ".join(sys.argv)[:300], "token": uuid.uuid4().hex}


def _refusal(workdir: str, holder: dict) -> WorkdirLockedError:
  """The one-sentence error of a second writer."""
  run = f"another {holder['what']} run" if holder.get("what") else (
      "another run")
  if holder.get("host") and holder.get("pid"):
    who = (f"{run} (host {holder['host']}, PID {holder['pid']}, since "
           f"{holder.get('since', '?')}; command: "
           f"{holder.get('command') or '?'})")
    stop = f"stop it (kill {holder['pid']} on {holder['host']})"
  else:
    who = f"{run} (it has not yet written its host and PID)"
    stop = "stop it"
  return WorkdirLockedError(
      f"Workdir {workdir} is in use by {who}: wait for that run to finish "
      f"or {stop} and rerun the same command (it resumes), or pass another "
      "--workdir; reading the workdir (reports, notebooks) needs no lock.",
      holder)


def _parse(text: str) -> dict:
  try:
    value = json.loads(text)
  except (json.JSONDecodeError, UnicodeDecodeError):
    return {}
  return value if isinstance(value, dict) else {}


class Lock:
  """The lock of one workdir; `acquire()` / `release()` or `hold()`."""

  def __init__(self, workdir: io.PathLike, what: str = ""):
    self.workdir = os.fspath(io.as_path(workdir))
    self.what = what
    self._fd: Optional[int] = None
    self._me: Optional[dict] = None
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None

  def acquire(self) -> "Lock":
    """Takes the lock or raises `WorkdirLockedError` at once (no waiting)."""
    io.makedirs(self.workdir)
    self._me = _me(self.what)
    if io.is_local(self.workdir):
      self._acquire_local()
    else:
      self._acquire_lease()
    return self

  def release(self) -> None:
    """Gives the lock back (the lock file is kept)."""
    if self._fd is not None:
      try:
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
      finally:
        os.close(self._fd)
        self._fd = None
    if self._thread is not None:
      self._stop.set()
      self._thread.join()
      self._thread = None
      path = io.as_path(self.workdir) / LEASE_FILE
      try:
        if _parse(path.read_text()).get("token") == self._me["token"]:
          path.unlink()
      except OSError:
        pass

  # Local: flock.

  def _acquire_local(self):
    path = os.path.join(self.workdir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        with os.fdopen(fd, "r") as f:
          holder = _parse(f.read())
        raise _refusal(self.workdir, holder) from None
      if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS,
                     errno.EINVAL):
        os.close(fd)
        logging.warning(
            "The file system of %s does not support locks (%s): running "
            "without the one-writer lock; make sure no other run writes this "
            "workdir.", self.workdir, e.strerror)
        return
      os.close(fd)
      raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(self._me).encode("utf-8"), 0)
    os.fsync(fd)
    self._fd = fd

  # Object store: a lease with a heartbeat.

  def _lease(self) -> dict:
    path = io.as_path(self.workdir) / LEASE_FILE
    try:
      return _parse(path.read_text())
    except (FileNotFoundError, OSError):
      return {}

  def _write_lease(self):
    io.write_atomic(io.as_path(self.workdir) / LEASE_FILE,
                    json.dumps({**self._me, "heartbeat": time.time()}))

  def _acquire_lease(self):
    holder = self._lease()
    if holder:
      age = time.time() - float(holder.get("heartbeat", 0))
      if age < LEASE_STALE_S:
        raise _refusal(self.workdir, holder)
      logging.warning(
          "Taking over the stale lease of %s: host %s, PID %s, since %s, "
          "last heartbeat %.0f s ago (more than %.0f s).", self.workdir,
          holder.get("host"), holder.get("pid"), holder.get("since"), age,
          LEASE_STALE_S)
    self._write_lease()
    time.sleep(LEASE_SETTLE_S)
    holder = self._lease()
    if holder.get("token") != self._me["token"]:
      raise _refusal(self.workdir, holder)
    self._stop.clear()
    self._thread = threading.Thread(target=self._heartbeat, daemon=True,
                                    name="robustjax-lease")
    self._thread.start()

  def _heartbeat(self):
    while not self._stop.wait(LEASE_REFRESH_S):
      holder = self._lease()
      if holder and holder.get("token") != self._me["token"]:
        logging.error("The lease of %s was taken over by host %s, PID %s: "
                      "two runs may now write this workdir.", self.workdir,
                      holder.get("host"), holder.get("pid"))
        return
      try:
        self._write_lease()
      except OSError as e:
        logging.warning("Could not refresh the lease of %s: %s",
                        self.workdir, e)


def _covered(folder: str) -> bool:
  """True if this process holds `folder`'s lock or a parent folder's."""
  path = folder.rstrip("/")
  while True:
    if path in _HELD:
      return True
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if not parent or parent == path or parent.endswith(":/"):
      return False
    path = parent


def acquire(workdir: io.PathLike, what: str = "") -> Optional[Lock]:
  """Takes `workdir`'s lock for the rest of this process (launchers).

  Args:
    workdir: the run's folder (created if missing).
    what: what holds it, named in other runs' errors (e.g. "study"); the
      command line is recorded as well.

  Returns:
    The lock, or None where nothing was taken (another process than 0, or
    this process already holds the folder or a parent folder).

  Raises:
    WorkdirLockedError: another process holds it.
  """
  folder = os.fspath(io.as_path(workdir))
  with _HELD_GUARD:
    if not parallel.is_main_process() or _covered(folder):
      return None
    lock = Lock(folder, what).acquire()
    _HELD[folder] = lock
    return lock


def release(lock: Optional[Lock]) -> None:
  """Gives back a lock from `acquire` (None: nothing)."""
  if lock is None:
    return
  with _HELD_GUARD:
    _HELD.pop(lock.workdir, None)
  lock.release()


@contextlib.contextmanager
def hold(workdir: io.PathLike, what: str = "") -> Iterator[Optional[Lock]]:
  """Holds `workdir`'s lock for the block (see `acquire`).

  Args:
    workdir: the run's folder (created if missing).
    what: the holder's description in other runs' errors.

  Yields:
    The lock, or None where this process holds it already.

  Raises:
    WorkdirLockedError: another process holds it.
  """
  lock = acquire(workdir, what)
  try:
    yield lock
  finally:
    release(lock)


def _alive(pid) -> bool:
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return False
  except (OSError, TypeError, ValueError):
    return True  # Another user's process, or no PID to check.
  return True


def holder(workdir: io.PathLike) -> dict:
  """The record of the process holding `workdir` ({} if none is known).

  Reads without locking (a reader never gets in a writer's way): locally,
  the lock file's record unless it is empty (released) or names a process
  of this host that has ended; in a bucket, the lease, stale or not.

  Args:
    workdir: the run's folder.
  """
  folder = os.fspath(io.as_path(workdir))
  if not io.is_local(folder):
    return Lock(folder)._lease()  # pylint: disable=protected-access
  try:
    with open(os.path.join(folder, LOCK_FILE)) as f:
      record = _parse(f.read())
  except OSError:
    return {}
  if record.get("host") == socket.gethostname() and not _alive(
      record.get("pid")):
    return {}
  return record
