"""Where the time goes: wall and JAX compile seconds per stage of a run.

A leaf module. JAX reports how long it spends tracing, lowering and
compiling every program through `jax.monitoring`; `compile_seconds()` sums
those events for this process (a persistent-cache hit costs the tracing and
lowering plus the cache read, not the XLA compile). `Stages` splits a run's
wall time and compile time over named stages:

  times = timing.Stages()
  with times.stage("train"):
    ...
  with times.stage("evaluate/adversarial"):
    ...
  logging.info("%s", times.summary())

Stages nest exclusively: time spent in an inner stage is charged to the
inner one only (a compression stage that first trains its base model
charges the training to "train"), so the stages add up to the total.
"""

import collections
import contextlib
import sys
import threading
import time
from typing import Dict, Iterator, List, Optional

import jax

# The events JAX records for each program it compiles (jax/_src/dispatch.py).
COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)

_lock = threading.Lock()
_total = [0.0]
_installed = [False]


def _listener(event: str, duration: float, **kwargs) -> None:
  del kwargs
  if event in COMPILE_EVENTS:
    with _lock:
      _total[0] += float(duration)


def compile_seconds() -> float:
  """Seconds this process has spent tracing + lowering + compiling so far.

  Counts from the first call (which installs the listener); call it once at
  the start of a run.
  """
  with _lock:
    if not _installed[0]:
      jax.monitoring.register_event_duration_secs_listener(_listener)
      _installed[0] = True
    return _total[0]


def peak_rss_mb() -> Optional[float]:
  """This process's peak resident memory so far, in MiB (None: unknown).

  `getrusage`'s high-water mark: kilobytes on Linux, bytes on macOS; it
  survives `execve`, so a launcher that restarted itself (the CPU
  allocator) reports the peak of both images.
  """
  try:
    import resource  # pylint: disable=g-import-not-at-top (not on Windows)
  except ImportError:
    return None
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return round(peak / (1 << 20 if sys.platform == "darwin" else 1 << 10), 1)


class Stages:
  """Wall and compile seconds per named stage (exclusive nesting)."""

  def __init__(self):
    self.wall: Dict[str, float] = collections.defaultdict(float)
    self.compile: Dict[str, float] = collections.defaultdict(float)
    self._stack: List[str] = []
    self._mark = (time.perf_counter(), compile_seconds())
    self._start = self._mark

  def _charge(self) -> None:
    now = (time.perf_counter(), compile_seconds())
    name = self._stack[-1] if self._stack else "other"
    self.wall[name] += now[0] - self._mark[0]
    self.compile[name] += now[1] - self._mark[1]
    self._mark = now

  @contextlib.contextmanager
  def stage(self, name: str) -> Iterator[None]:
    """Charges the time spent inside to `name` (and not to its parent)."""
    self._charge()
    self._stack.append(name)
    try:
      yield
    finally:
      self._charge()
      self._stack.pop()

  def as_dict(self) -> dict:
    """{"total": {...}, "stages": {name: {"wall_s", "compile_s"}}}."""
    self._charge()
    stages = {k: {"wall_s": round(self.wall[k], 3),
                  "compile_s": round(self.compile[k], 3)}
              for k in sorted(self.wall) if self.wall[k] > 0}
    return {"total": {"wall_s": round(sum(self.wall.values()), 3),
                      "compile_s": round(sum(self.compile.values()), 3)},
            "stages": stages}

  def summary(self) -> str:
    """A small text table: stage, wall s, compile s, compile share."""
    d = self.as_dict()
    lines = [f"{'stage':<28} {'wall s':>8} {'compile s':>10} {'compile':>8}"]
    for name, v in list(d["stages"].items()) + [("total", d["total"])]:
      share = v["compile_s"] / v["wall_s"] if v["wall_s"] else 0.0
      lines.append(f"{name:<28} {v['wall_s']:>8.1f} {v['compile_s']:>10.1f} "
                   f"{100 * share:>7.0f}%")
    return "\n".join(lines)
