"""robustjax.progress: log lines with ETA, bars, the log file."""

import io as stdio
import logging as std_logging
import os
import sys
from unittest import mock

from absl import logging
from absl.testing import absltest

from robustjax import progress


class _Capture(std_logging.Handler):
  """Collects formatted messages that reach the root logger."""

  def __init__(self):
    super().__init__(std_logging.INFO)
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())


class _FakeClock:

  def __init__(self):
    self.t = 0.0

  def __call__(self):
    return self.t


class ProgressTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self._verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.INFO)
    self.capture = _Capture()
    std_logging.getLogger().addHandler(self.capture)
    self._root_handlers = list(std_logging.getLogger().handlers)

  def tearDown(self):
    progress.close_log_files()
    root = std_logging.getLogger()
    for h in list(root.handlers):
      if h not in self._root_handlers:
        root.removeHandler(h)
    root.removeHandler(self.capture)
    logging.set_verbosity(self._verbosity)
    super().tearDown()

  def test_format_duration(self):
    self.assertEqual(progress.format_duration(42.4), "42 s")
    self.assertEqual(progress.format_duration(185), "3 min 05 s")
    self.assertEqual(progress.format_duration(2 * 3600 + 7 * 60), "2 h 07 min")
    self.assertEqual(progress.format_duration(None), "?")

  def test_log_mode_writes_lines_with_eta(self):
    clock = _FakeClock()
    with mock.patch.object(progress, "_clock", clock):
      with progress.Progress(4, desc="train", unit="step", mode="log",
                             log_every_s=15) as bar:
        for _ in range(4):
          clock.t += 10.0  # One step every 10 s.
          bar.update(1, loss=0.123456)
    self.assertEqual(self.capture.messages, [
        "train: 0/4 steps (0 %), starting",
        # t=20: 2 steps at 0.1 steps/s, 2 left.
        "train: 2/4 steps (50 %), 0.1 steps/s, elapsed 20 s, ETA 20 s "
        "[loss=0.1235]",
        "train: 4/4 steps (100 %), 0.1 steps/s, elapsed 40 s, ETA 0 s "
        "[loss=0.1235]",
        "train: 4/4 steps (100 %) done in 40 s (0.1 steps/s) [loss=0.1235]"])

  def test_eta_uses_only_this_process_pace(self):
    clock = _FakeClock()
    with mock.patch.object(progress, "_clock", clock):
      bar = progress.Progress(100, initial=50, mode="off")
      self.assertIsNone(bar.eta_s)  # No pace yet.
      clock.t = 10.0
      bar.update(5)  # 5 units in 10 s in this process: 0.5 units/s.
      self.assertAlmostEqual(bar.rate, 0.5)
      self.assertAlmostEqual(bar.eta_s, 90.0)  # 45 left.
    self.assertIsNone(progress.Progress(None, mode="off").eta_s)

  def test_off_and_inactive_log_nothing(self):
    with progress.Progress(3, desc="x", mode="off") as bar:
      bar.update(3)
    with progress.Progress(3, desc="y", mode="log", active=False) as bar:
      bar.update(3)
    self.assertEqual(self.capture.messages, [])

  def test_default_mode(self):
    with mock.patch.dict(os.environ, {progress.ENV_MODE: ""}), \
        mock.patch.object(sys, "stderr", stdio.StringIO()):
      self.assertEqual(progress.default_mode(), "log")  # Not a TTY.
    with mock.patch.dict(os.environ, {progress.ENV_MODE: "off"}):
      self.assertEqual(progress.default_mode(), "off")
    with mock.patch.dict(os.environ, {progress.ENV_MODE: "loud"}):
      with self.assertRaisesRegex(ValueError, "bar, log, off"):
        progress.default_mode()

  def test_bar_mode_draws_a_bar_and_logs_the_end(self):
    err = stdio.StringIO()
    with mock.patch.object(sys, "stderr", err):
      with progress.Progress(3, desc="cells", unit="cell", mode="bar") as bar:
        for _ in range(3):
          bar.update(1)
    self.assertIn("cells: 100%", err.getvalue())  # tqdm's bar.
    self.assertIn("3/3", err.getvalue())
    # The start line goes to log files only; the summary to the console too.
    self.assertLen(self.capture.messages, 1)
    self.assertIn("cells: 3/3 cells (100 %) done in", self.capture.messages[0])

  def test_track(self):
    self.assertEqual(list(progress.track([1, 2, 3], desc="t", mode="log")),
                     [1, 2, 3])
    self.assertIn("t: 3/3 its (100 %) done in", self.capture.messages[-1])

  def test_log_to_file_writes_and_is_idempotent(self):
    workdir = self.create_tempdir().full_path
    path = progress.log_to_file(workdir)
    self.assertEqual(path, os.path.join(workdir, "log.txt"))
    self.assertEqual(progress.log_to_file(workdir), path)  # No 2nd handler.
    logging.info("hello %d", 7)
    std_logging.getLogger("orbax.whatever").info("quiet library")
    # Bar mode: the start line and the periodic lines go to the file.
    with mock.patch.object(sys, "stderr", stdio.StringIO()):
      with progress.Progress(2, desc="study", mode="bar",
                             log_every_s=0) as bar:
        bar.update(2)
    progress.close_log_files()
    text = open(path).read()
    self.assertEqual(text.count("hello 7"), 1)
    self.assertEqual(text.count("starts logging to"), 1)
    self.assertIn("study: 0/2 its (0 %), starting", text)
    self.assertIn("study: 2/2 its (100 %), ", text)  # Periodic, with ETA.
    self.assertIn("study: 2/2 its (100 %) done in", text)
    # Appends: a second process continues the same file.
    progress.log_to_file(workdir)
    logging.info("second run")
    progress.close_log_files()
    text = open(path).read()
    self.assertIn("hello 7", text)
    self.assertIn("second run", text)
    self.assertEqual(text.count("starts logging to"), 2)

  def test_log_to_file_keeps_warnings_on_the_console(self):
    root = std_logging.getLogger()
    saved = list(root.handlers)
    for h in saved:
      root.removeHandler(h)  # As in a plain Python session.
    err = stdio.StringIO()
    try:
      with mock.patch.object(sys, "stderr", err):
        progress.log_to_file(self.create_tempdir().full_path)
        logging.warning("visible warning")
        logging.info("file only")
    finally:
      progress.close_log_files()
      for h in list(root.handlers):
        root.removeHandler(h)
      for h in saved:
        root.addHandler(h)
    self.assertIn("visible warning", err.getvalue())
    self.assertNotIn("file only", err.getvalue())

  def test_notebook_logging_shows_info(self):
    err = stdio.StringIO()
    with mock.patch.object(sys, "stderr", err):
      logging.set_verbosity(logging.WARNING)
      progress.notebook_logging()
      progress.notebook_logging()  # Idempotent: one handler.
      logging.info("now visible")
    self.assertEqual(err.getvalue().count("now visible"), 1)
    self.assertEqual(logging.get_verbosity(), logging.INFO)


if __name__ == "__main__":
  absltest.main()
