"""Stopping a run cleanly on SIGTERM / SIGINT: `with preemption.guard(): ...`.

A TPU VM or Colab that preempts a run sends SIGTERM; Ctrl-C sends SIGINT.
While a `guard` is active (the study runner holds one), such a signal does
not kill the process where it stands:

* inside a `deferred()` block (the trainer's step loop, a journal write) it
  only sets a flag: the block goes on to its next safe point (the end of a
  train step, where the trainer saves a checkpoint) and raises `Preempted`
  there (`requested()`, `check()`);
* anywhere else (an evaluation cell's computation, nothing of which is
  recorded before it ends) it raises `Preempted` at once, in the main
  thread, abandoning that work;
* a second signal raises `Preempted` at once, wherever the run is.

`Preempted` derives from BaseException, as KeyboardInterrupt does, so
`except Exception` handlers let it through. The holder of the guard (the
study runner) flushes what is safe and raises it again with a one-line
message; a launcher prints that line and exits with 128 + the signal's
number (143 for SIGTERM, 130 for SIGINT), the status a shell reports for a
process ended by that signal.

Signal handlers can only be installed by the main thread: elsewhere (a
worker thread of a notebook) `guard` changes nothing, and signals keep their
usual effect. Multi-host runs: each process catches its own signals; the
trainer acts on process 0's (robustjax/train/trainer.py), so that every
process stops at the same step.
"""

import contextlib
import signal
import threading
from typing import Iterator, Optional

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(BaseException):
  """A run stopped by SIGTERM or SIGINT.

  Attributes:
    signum: the signal's number.
    message: one line for the user (by default "Stopped by SIGTERM.").
    detail: what the interrupted work kept, e.g. where a training was
      checkpointed ('' if nothing).
  """

  def __init__(self, signum: int, message: str = "", detail: str = ""):
    self.signum = int(signum)
    self.detail = detail
    self.message = message or f"Stopped by {self.signal_name}."
    super().__init__(self.message)

  @property
  def signal_name(self) -> str:
    try:
      return signal.Signals(self.signum).name
    except ValueError:
      return f"signal {self.signum}"

  @property
  def exit_code(self) -> int:
    """128 + the signal's number, as a shell reports a killed process."""
    return 128 + self.signum


class _State:
  active = False  # A guard's handlers are installed.
  deferring = 0  # Depth of `deferred()` blocks.
  signum: Optional[int] = None  # The first signal received, if any.


def _handle(signum, frame) -> None:
  del frame
  first = _State.signum is None
  if first:
    _State.signum = signum
  if first and _State.deferring:
    return  # The block raises at its next safe point.
  raise Preempted(signum)


@contextlib.contextmanager
def guard() -> Iterator[None]:
  """Catches SIGTERM and SIGINT for the block (see the module docstring).

  Nested guards share the outer one. Leaving the block restores the
  handlers that were there before and forgets any signal received.
  """
  if _State.active or threading.current_thread() is not (
      threading.main_thread()):
    yield
    return
  previous = {s: signal.signal(s, _handle) for s in SIGNALS}
  _State.active, _State.signum, _State.deferring = True, None, 0
  try:
    yield
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
    _State.active, _State.signum, _State.deferring = False, None, 0


@contextlib.contextmanager
def deferred() -> Iterator[None]:
  """Within the block a first signal only sets the flag (`requested`).

  The block itself decides where to stop (`check`); leaving it raises
  nothing, and the next `check` outside (or any code outside, on a second
  signal) raises `Preempted`. Without an active guard this changes
  nothing.
  """
  _State.deferring += 1
  try:
    yield
  finally:
    _State.deferring = max(0, _State.deferring - 1)


def requested() -> Optional[int]:
  """The signal received under the active guard, or None."""
  return _State.signum


def check() -> None:
  """Raises `Preempted` if a signal was received under the active guard."""
  if _State.signum is not None:
    raise Preempted(_State.signum)
