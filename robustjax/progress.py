"""Progress you can see: bars with ETA, periodic log lines, a log file.

A leaf module (absl, tqdm and the standard library only), used by the
training, compression, evaluation, study and sweep loops:

  with progress.Progress(total=num_steps, desc="train", unit="step",
                         initial=start_step) as bar:
    for step in range(start_step, num_steps):
      ...
      bar.update(1, loss=loss)

* In a terminal (stderr is a TTY) or a Jupyter/Colab notebook, a
  `tqdm.auto` bar shows done/total, rate and ETA.
* Otherwise (a log file, CI, `nohup`), an INFO log line with the same
  numbers every `log_every_s` seconds, plus one at the start and the end.
* `ROBUSTJAX_PROGRESS=bar|log|off` overrides the choice.

`log_to_file(workdir)` copies the absl / Python log to `WORKDIR/log.txt`
(appending, so a resumed run continues the same file); the periodic progress
lines always go there, bar or not. `notebook_logging()` makes absl INFO
lines visible outside `app.run` (Colab, Jupyter), where absl hides them.
"""

import logging as std_logging
import os
import sys
import time
from typing import Iterable, Iterator, Optional, TypeVar

from absl import logging
from tqdm import auto as tqdm_auto

from robustjax import io

ENV_MODE = "ROBUSTJAX_PROGRESS"
MODES = ("bar", "log", "off")
LOG_FILE = "log.txt"
# INFO chatter of these libraries is kept out of log.txt and notebook output.
QUIET_PATHS = ("/orbax/", "/tensorstore/", "/tensorflow_datasets/", "/etils/")

T = TypeVar("T")
_clock = time.monotonic  # Seconds; replaced by a fake clock in tests.


class QuietLibraries(std_logging.Filter):
  """Drops INFO (and below) records logged from inside `QUIET_PATHS`."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    if record.levelno > std_logging.INFO:
      return True
    return not any(p in record.pathname for p in QUIET_PATHS)


class _WorkdirFileHandler(std_logging.FileHandler):
  """The handler `log_to_file` installs (told apart from others by type)."""


class _NotebookHandler(std_logging.StreamHandler):
  """The console handler `notebook_logging` installs."""


class _WarningsHandler(std_logging.StreamHandler):
  """WARNING+ to stderr, standing in for Python's last-resort handler."""


def format_duration(seconds: float) -> str:
  """Human-readable duration: '42 s', '3 min 05 s', '2 h 07 min'."""
  if seconds is None or seconds != seconds or seconds == float("inf"):
    return "?"
  seconds = int(round(max(seconds, 0.0)))
  if seconds < 60:
    return f"{seconds} s"
  minutes, seconds = divmod(seconds, 60)
  if minutes < 60:
    return f"{minutes} min {seconds:02d} s"
  hours, minutes = divmod(minutes, 60)
  return f"{hours} h {minutes:02d} min"


def in_notebook() -> bool:
  """True inside a Jupyter / Colab kernel (an IPython shell with a kernel)."""
  ipython = sys.modules.get("IPython")
  if ipython is None:
    return False
  shell = ipython.get_ipython()
  return shell is not None and hasattr(shell, "kernel")


def default_mode() -> str:
  """'bar' on a TTY or in a notebook, else 'log'; `$ROBUSTJAX_PROGRESS` wins.

  Raises:
    ValueError: if `$ROBUSTJAX_PROGRESS` is set to something else than
      bar, log or off.
  """
  mode = os.environ.get(ENV_MODE, "").strip().lower()
  if mode:
    if mode not in MODES:
      raise ValueError(f"${ENV_MODE}={mode!r}: use one of {', '.join(MODES)} "
                       "(or unset it to choose from the terminal).")
    return mode
  stderr = sys.stderr
  is_tty = bool(getattr(stderr, "isatty", lambda: False)())
  return "bar" if is_tty or in_notebook() else "log"


def _file_handlers():
  return [h for h in std_logging.getLogger().handlers
          if isinstance(h, _WorkdirFileHandler)]


def log_to_file(workdir: str, filename: str = LOG_FILE) -> str:
  """Also writes the absl / Python log (INFO and up) to `workdir/filename`.

  Appends, so a resumed run continues the same file; calling it again for
  the same file changes nothing. Each call that opens the file first writes a
  line marking the start of this process. In a multi-host run, call it on
  process 0 only (or give each process its own `filename`).

  An object store (`gs://...` workdir) cannot be appended to, so there the
  log file is skipped with one warning (the console log is unchanged).

  Args:
    workdir: the run's output folder (created if missing), or a bucket URL.
    filename: file name inside `workdir`.

  Returns:
    The absolute path of the log file ("" for a bucket workdir).
  """
  if not io.is_local(workdir):
    logging.log_first_n(
        logging.WARNING, "No %s for the bucket workdir %s (object stores "
        "cannot append); the log goes to the console only.", 1, filename,
        workdir)
    return ""
  path = os.path.abspath(os.path.join(workdir, filename))
  root = std_logging.getLogger()
  if any(h.baseFilename == path for h in _file_handlers()):
    return path
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if not [h for h in root.handlers if not isinstance(h, _WorkdirFileHandler)]:
    # Without any console handler, Python prints WARNING+ to stderr by itself
    # ("last resort"); a file handler alone would silence that. Keep it.
    console = _WarningsHandler(sys.stderr)
    console.setLevel(std_logging.WARNING)
    root.addHandler(console)
  handler = _WorkdirFileHandler(path, mode="a", encoding="utf-8")
  handler.setLevel(std_logging.INFO)
  handler.setFormatter(logging.PythonFormatter())
  handler.addFilter(QuietLibraries())
  root.addHandler(handler)
  if logging.get_verbosity() < logging.INFO:
    logging.set_verbosity(logging.INFO)  # Records must exist to reach files.
  logging.info("==== %s: process %d starts logging to %s ====",
               time.strftime("%Y-%m-%d %H:%M:%S"), os.getpid(), path)
  return path


def close_log_files() -> None:
  """Detaches and closes every handler `log_to_file` installed."""
  root = std_logging.getLogger()
  for h in _file_handlers():
    root.removeHandler(h)
    h.close()


def notebook_logging(level: int = logging.INFO) -> None:
  """Shows absl log lines (INFO by default) in a notebook's output.

  Outside `app.run`, absl installs no handler and Python shows WARNING and
  up only, so a long library call prints nothing. This adds one short-format
  stderr handler (idempotent) and sets absl's verbosity.

  Args:
    level: absl verbosity, e.g. `absl.logging.INFO` or `absl.logging.DEBUG`.
  """
  root = std_logging.getLogger()
  if not any(isinstance(h, _NotebookHandler) for h in root.handlers):
    handler = _NotebookHandler(sys.stderr)
    handler.setFormatter(std_logging.Formatter(
        "%(asctime)s %(levelname).1s %(message)s", datefmt="%H:%M:%S"))
    handler.addFilter(QuietLibraries())
    root.addHandler(handler)
    # Drop the WARNING-only console handler `log_to_file` may have added.
    for h in list(root.handlers):
      if isinstance(h, _WarningsHandler):
        root.removeHandler(h)
  logging.set_verbosity(level)


class Progress:
  """A progress bar with ETA, or periodic log lines, for one loop.

  Use as a context manager (or call `close()`); `update(n, **postfix)` after
  each unit of work. `postfix` values (e.g. loss=0.41) are shown on the bar
  and in the log lines.
  """

  def __init__(self, total: Optional[int], desc: str = "", unit: str = "it",
               initial: int = 0, log_every_s: float = 30.0,
               mode: Optional[str] = None, active: bool = True):
    """Starts the bar (or the first log line).

    Args:
      total: number of units of the whole job (None: unknown, no ETA).
      desc: short label, e.g. "train" or "study cells".
      unit: unit name, e.g. "step" or "cell".
      initial: units already done before this process (a resumed run); the
        ETA uses only the pace of this process.
      log_every_s: seconds between two log lines (also in bar mode, where
        they go to the `log_to_file` files only).
      mode: 'bar', 'log' or 'off'; None picks `default_mode()`.
      active: False turns everything off (e.g. on non-main processes).
    """
    self.total = total
    self.desc = desc
    self.unit = unit
    self.n = int(initial)
    self.initial = int(initial)
    self.log_every_s = float(log_every_s)
    self.mode = (mode or default_mode()) if active else "off"
    if self.mode not in MODES:
      raise ValueError(f"Progress mode {self.mode!r}: use one of {MODES}.")
    self.postfix = {}
    self._t0 = _clock()
    self._last_log = self._t0
    self._closed = False
    self._bar = None
    if self.mode == "bar":
      self._bar = tqdm_auto.tqdm(
          total=total, initial=self.initial, desc=desc, unit=unit,
          dynamic_ncols=True, file=sys.stderr, smoothing=0.1)
    if self.mode != "off":
      self._log(self._line("start"), console=self.mode == "log")

  def __enter__(self) -> "Progress":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  @property
  def elapsed_s(self) -> float:
    """Seconds since this `Progress` started."""
    return _clock() - self._t0

  @property
  def rate(self) -> float:
    """Units per second in this process (0 before the first update)."""
    elapsed, done = self.elapsed_s, self.n - self.initial
    return done / elapsed if elapsed > 0 and done > 0 else 0.0

  @property
  def eta_s(self) -> Optional[float]:
    """Seconds left at this process's pace, or None if unknown."""
    rate = self.rate
    if self.total is None or rate <= 0:
      return None
    return max(self.total - self.n, 0) / rate

  def update(self, n: int = 1, **postfix) -> None:
    """Marks `n` more units done; `postfix` replaces the shown values."""
    self.n += n
    if postfix:
      self.postfix = {k: _short(v) for k, v in postfix.items()}
    if self.mode == "off":
      return
    if self._bar is not None:
      if postfix:
        self._bar.set_postfix(self.postfix, refresh=False)
      self._bar.update(n)
    now = _clock()
    if now - self._last_log >= self.log_every_s:
      self._last_log = now
      self._log(self._line("progress"), console=self.mode == "log")

  def write(self, message: str) -> None:
    """Logs `message` (INFO) without breaking the bar."""
    if self._bar is not None:
      self._bar.clear()
      logging.info("%s", message)
      self._bar.refresh()
    else:
      logging.info("%s", message)

  def close(self) -> None:
    """Closes the bar and logs a final line (done, elapsed, rate)."""
    if self._closed:
      return
    self._closed = True
    if self.mode == "off":
      return
    if self._bar is not None:
      self._bar.close()
    self._log(self._line("end"), console=True)

  def _line(self, when: str) -> str:
    head = f"{self.desc}: " if self.desc else ""
    total = "?" if self.total is None else str(self.total)
    units = f"{self.n}/{total} {self.unit}s"
    if self.total:
      units += f" ({100 * self.n / self.total:.0f} %)"
    elapsed = self.elapsed_s
    if when == "start":
      text = f"{head}{units}, starting"
    elif when == "end":
      text = (f"{head}{units} done in {format_duration(elapsed)}"
              f" ({self.rate:.3g} {self.unit}s/s)")
    else:
      text = (f"{head}{units}, {self.rate:.3g} {self.unit}s/s, elapsed "
              f"{format_duration(elapsed)}, ETA {format_duration(self.eta_s)}")
    if self.postfix:
      text += " [" + ", ".join(f"{k}={v}" for k, v in self.postfix.items()) \
          + "]"
    return text

  def _log(self, text: str, console: bool) -> None:
    """INFO line to the console (absl) or, with a bar, to the log files."""
    if console:
      logging.info("%s", text)
      return
    record = logging.get_absl_logger().makeRecord(
        logging.get_absl_logger().name, std_logging.INFO, __file__, 0, text,
        (), None)
    for handler in _file_handlers():
      if record.levelno >= handler.level:
        handler.handle(record)


def track(iterable: Iterable[T], total: Optional[int] = None, desc: str = "",
          unit: str = "it", **kwargs) -> Iterator[T]:
  """Yields from `iterable` while showing a `Progress` over it.

  Args:
    iterable: the items to go through.
    total: number of items (default: `len(iterable)` if it has one).
    desc: label of the bar / log lines.
    unit: unit name.
    **kwargs: more `Progress` arguments (initial, log_every_s, mode, active).

  Yields:
    The items of `iterable`.
  """
  if total is None and hasattr(iterable, "__len__"):
    total = len(iterable)
  with Progress(total, desc=desc, unit=unit, **kwargs) as bar:
    for item in iterable:
      yield item
      bar.update(1)


def _short(value):
  """Compact display of a postfix value (floats to 4 significant digits)."""
  try:
    return f"{float(value):.4g}"
  except (TypeError, ValueError):
    return str(value)
